"""Enrollment time per method, phase by phase, on the bundled sample portrait.

``mesh`` is the shipped method; ``graminverter`` runs from inverter bundles built here with randomly
initialised networks of each preset (the cost of a forward pass does not depend on the weights'
values, so this times the method before any trained bundle exists; it says nothing about quality).
Phases: align (landmarks + crop), matte, encoder, coarse render, detail reconstructor, bake (textures)
and silhouette bound. The manifolds' height grids (for the detail reconstructor and the bake) do not
depend on the identity: the first enrollment searches them (``first_*`` in the output), later ones
reuse them. Medians of ``--repeats`` warm runs.

    python bench/enroll.py [--presets tiny,small] [--device auto] [--repeats 3] [--json out.json]
    python bench/enroll.py --no-face-models ...   # networks only, from the sample resized (no mediapipe:
                                                  # e.g. on a GPU machine whose image lacks it)
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _report import emit, sync

import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk" / "assets" / "sample_portrait.png"


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
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
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
        geometry = lap("bake_geometry", lambda: inverter.height_grids(128, extent))
        avatar = lap("bake", lambda: bake_model(inverter.generator, ws, texture_resolution=2 * g.plane_resolution,
                                                extent=extent, detail=detail, geometry=geometry))
        lap("silhouette", lambda: _matte_alpha(avatar, matte, pose, 0.5))
    return phases


def _mesh_runs(rgb, repeats: int, runs: dict):
    """Time the mesh method (align, matte, whole enrollment); returns the sample's aligned crop and matte."""
    import gramcast
    from gramcast.face import Matting, detect_and_align

    gramcast.enroll(SAMPLE)                                   # warm-up: face models, caches
    runs["mesh"] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        aligned = detect_and_align(rgb, size=512)
        t1 = time.perf_counter()
        with Matting() as matting:
            matte = matting(aligned.crop)
        t2 = time.perf_counter()
        gramcast.enroll(SAMPLE)
        t3 = time.perf_counter()
        gramcast.enroll(SAMPLE, refine_matte=False)            # the edge's closed-form matting costs the difference
        t4 = time.perf_counter()
        gramcast.enroll(SAMPLE, agreed_matte=False)            # one look of the segmentation instead of six
        t5 = time.perf_counter()
        gramcast.enroll(SAMPLE, matte_look_margin=0.0)         # no look wider than the widened crop
        runs["mesh"].append({"align": t1 - t0, "matte": t2 - t1, "enroll_total": t3 - t2,
                             "enroll_total_without_refine_matte": t4 - t3,
                             "enroll_total_one_look_matte": t5 - t4,
                             "enroll_total_without_wider_look": time.perf_counter() - t5})
    return aligned, matte


def _unaligned(rgb):
    """The sample as a 512² 'aligned' crop at the frontal pose with a full matte (no face models)."""
    import types

    import cv2
    import numpy as np

    crop = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_AREA)
    pose = types.SimpleNamespace(yaw=0.0, pitch=0.0, roll=0.0)
    return types.SimpleNamespace(crop=crop, pose=pose), np.ones((512, 512), np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-face-models", action="store_true",
                    help="skip mesh and alignment (no mediapipe): time the graminverter networks on the "
                         "sample resized to a crop, frontal pose, full matte")
    args = ap.parse_args()

    from gramcast.device import resolve_device
    from gramcast.images import load_image

    device = resolve_device(args.device)
    rgb = load_image(SAMPLE)
    runs: dict[str, list[dict[str, float]]] = {}
    if args.no_face_models:
        aligned, matte = _unaligned(rgb)
    else:
        aligned, matte = _mesh_runs(rgb, args.repeats, runs)
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
