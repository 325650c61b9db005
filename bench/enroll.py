"""Enrollment time per method, phase by phase, on the bundled sample portrait.

``mesh`` is the shipped method; ``graminverter`` runs from inverter bundles built here with randomly
initialised networks of each preset (the cost of a forward pass does not depend on the weights'
values, so this times the method before any trained bundle exists; it says nothing about quality).
Phases: align (landmarks + crop), matte, encoder, coarse render, detail reconstructor, bake (textures)
and silhouette bound. The manifolds' height grids (for the detail reconstructor and the bake) do not
depend on the identity: the first enrollment searches them (``first_*`` in the output), later ones
reuse them. Medians of ``--repeats`` warm runs.

    python bench/enroll.py [--presets tiny,small] [--device auto] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _report import emit

import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk" / "assets" / "sample_portrait.png"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_inverter(preset: str, device):
    from gramcast.avatar.graminverter import Inverter
    from gramcast.model import DetailConfig, DetailReconstructor, EncoderConfig, GRAMEncoder, GRAMModel

    torch.manual_seed(0)
    gen = GRAMModel.from_config(preset)
    enc = GRAMEncoder(EncoderConfig.for_model(gen.config, preset))
    det = DetailReconstructor(DetailConfig.for_model(gen.config, preset))
    return Inverter(gen.to(device).eval(), enc.to(device).eval(), det.to(device).eval())


def time_graminverter(inverter, aligned, matte, device) -> dict[str, float]:
    from gramcast.avatar.bake import bake_model
    from gramcast.avatar.graminverter import _matte_alpha, _to_model_input

    phases: dict[str, float] = {}

    def lap(name, fn):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        phases[name] = time.perf_counter() - t0
        return out

    pose = (float(aligned.pose.yaw), float(aligned.pose.pitch))
    poses = torch.tensor([pose], device=device)
    with torch.no_grad():
        image = _to_model_input(aligned.crop, inverter.resolution).to(device)
        ws = lap("encoder", lambda: inverter.encoder(image))
        coarse = lap("coarse_render", lambda: inverter.generator.render(ws, poses).rgb)
        heights = lap("manifold_grid", inverter.low_res_heights)
        detail = lap("detail", lambda: inverter.detail(image, coarse, poses, heights))
        g = inverter.generator.config
        extent = inverter.detail.config.extent
        geometry = lap("bake_geometry", lambda: inverter.bake_geometry(128, extent))
        avatar = lap("bake", lambda: bake_model(inverter.generator, ws, texture_resolution=2 * g.plane_resolution,
                                                extent=extent, detail=detail, geometry=geometry))
        lap("silhouette", lambda: _matte_alpha(avatar, matte, pose, 0.5))
    return phases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import gramcast
    from gramcast.device import resolve_device
    from gramcast.face import Matting, detect_and_align
    from gramcast.images import load_image

    device = resolve_device(args.device)
    rgb = load_image(SAMPLE)
    runs: dict[str, list[dict[str, float]]] = {"mesh": []}
    gramcast.enroll(SAMPLE)                                   # warm-up: face models, caches
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        aligned = detect_and_align(rgb, size=512)
        t1 = time.perf_counter()
        with Matting() as matting:
            matte = matting(aligned.crop)
        t2 = time.perf_counter()
        gramcast.enroll(SAMPLE)
        runs["mesh"].append({"align": t1 - t0, "matte": t2 - t1, "enroll_total": time.perf_counter() - t2})
    for preset in [p.strip() for p in args.presets.split(",") if p.strip()]:
        inverter = random_inverter(preset, device)
        first = time_graminverter(inverter, aligned, matte, device)   # also the warm-up
        runs[f"graminverter ({preset}) first call"] = [{f"first_{k}": first[k] for k in ("manifold_grid", "bake_geometry")}]
        key = f"graminverter ({preset}, random init)"
        runs[key] = []
        for _ in range(args.repeats):
            phases = time_graminverter(inverter, aligned, matte, device)
            phases["total_after_align_and_matte"] = sum(phases.values())
            runs[key].append(phases)
    result = {"device": str(device), "threads": torch.get_num_threads(), "image": SAMPLE.name, "methods": {}}
    print(f"device {device}, {torch.get_num_threads()} threads; medians of {args.repeats} warm runs, seconds")
    for key, rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        result["methods"][key] = med
        print(f"{key:34s} " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()))
    emit(result, args.json)


if __name__ == "__main__":
    main()
