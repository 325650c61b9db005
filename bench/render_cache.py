"""The cached avatar renderer against the full GRAM model, torch against onnxruntime, in one run.

    python bench/render_cache.py [--sizes 256 512] [--batches 1 8] [--threads N] [--device auto]
                                 [--presets tiny small paper]
                                 [--tune-malloc] [--quick] [--no-enrolled] [--json docs/bench/render_cache_2core.json]

Avatars: the sample portrait enrolled with the mesh method (1 layer; its enrollment is timed, first call
with model loading and a warm call) and with random-init ``small`` GRAMInverter networks (24 layers bounded
by the portrait's matte, the background manifold dropped: a product avatar's layer structure), and bakes
of the ``--presets`` GRAMModels (default ``tiny`` and ``small``, 12 and 24 layers; ``paper``: 24 layers at
256²; random weights: a frame's cost depends on how many layers are drawn, not on their values). For every
avatar, output size and batch:

  * ``torch``: ``Renderer(avatar).render(poses, size)`` (``render_cache``) as shipped: for the bakes the
    ordered O(L) compositing (their layers are checked non-crossing at load; the row's ``compositing``
    says which path ran),
  * ``torch general``: for the bakes, ``Renderer(avatar, compositing="general")``, the sort-free O(L²)
    compositing, timed in the same loop as ``torch`` (calls alternate, so both see the same load),
  * ``torch eager``: on a GPU, ``Renderer(avatar, cuda_graphs=False)``, the shipped path without CUDA graph
    replay, alternating with ``torch`` (``graphed_over_eager``; ``graphs_disabled`` says why where the
    capture failed and ``torch`` fell back to eager),
  * ``onnx``: the shipped path exported to ONNX and run by onnxruntime (``OnnxRenderer``),
  * ``full``: for the bakes, ``GRAMModel.render(ws, poses, size)`` of the model that was baked (tri-plane
    synthesis, ray/manifold intersections at 1/4 resolution, the decoder at every hit, compositing),

as frames per second: the batch over the fastest of the repeated calls (the figure least disturbed by other
processes on a shared machine; the median is printed beside it), with the ratios cached vs full model and
onnx vs torch from those (``cached_over_full``: the shipped torch path; ``general_over_full``: the general
path; ``ordered_over_general``: their ratio; ``cached_over_full_paired``, the column "paired": each full call
against the best of the 5 cached calls before and after it, the median over the full calls, a ratio both of
whose sides saw the same load), and the compositing step alone, both paths on random arrays
of a frame's shape (median ms per frame; ``composite_ordered_over_general``). Each measurement repeats
its call until ``--repeats`` calls or ``--budget`` seconds, whichever comes first (at least one call, two
for the full model, after a warm-up call). CPU runs use ``--threads`` intra-op threads for torch and
onnxruntime alike (default: torch's default); CUDA runs are added where a GPU is available. Goals checked at the end: >= 30 frames/s at 256² for one stream (batch 1,
the enrolled avatar) on the CPU, and the cached renderer >= 50x faster than the full model.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

from _report import emit, sync

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sdk" / "assets" / "sample_portrait.png"
GOAL_FPS_256 = 30.0
GOAL_SPEEDUP = 50.0


def tune_malloc() -> bool:
    """glibc: serve blocks up to 32 MB from the heap and keep up to 256 MB of freed heap (no return to the
    OS), so the renderer's per-frame arrays reuse resident pages instead of faulting fresh ones in. What a
    serving process can do at start (or with GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:
    glibc.malloc.trim_threshold=268435456)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 << 20) and libc.mallopt(-1, 256 << 20))  # M_MMAP_ / M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def time_calls(fn, dev: torch.device, repeats: int, budget_s: float, warmup: bool = True) -> dict:
    """Median and best seconds of one call of ``fn``."""
    if warmup:
        fn()
        sync(dev)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "best_s": min(times), "calls": len(times)}


def time_paired(full, cached, dev: torch.device, repeats: int, budget_s: float, warmup: bool,
                around: int = 5) -> dict:
    """``time_calls`` of ``full`` (as there: the median and best seconds of its calls), each call between
    ``around`` calls of ``cached`` before and after it; ``paired``: the median over the full calls of a full
    call's seconds over the best of the cached calls around it. This machine's load shifts within minutes, and
    the memory-bound cached frame feels it more than the compute-bound full one: a ratio of calls a second
    apart is steadier than one of bests taken minutes apart."""
    if warmup:
        full()
        sync(dev)

    def best_cached() -> float:
        best = float("inf")
        for _ in range(around):
            t = time.perf_counter()
            cached()
            sync(dev)
            best = min(best, time.perf_counter() - t)
        return best

    times, ratios = [], []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        before = best_cached()
        t = time.perf_counter()
        full()
        sync(dev)
        times.append(time.perf_counter() - t)
        ratios.append(times[-1] / min(before, best_cached()))
    return {"median_s": statistics.median(times), "best_s": min(times), "calls": len(times),
            "paired": statistics.median(ratios)}


def time_alternating(fns: dict, dev: torch.device, repeats: int, budget_s: float) -> dict:
    """``time_calls`` for several functions at once: one warm-up call each, then rounds of one call of
    each in turn (so a change in the machine's load hits all alike); ``budget_s`` per function."""
    for fn in fns.values():
        fn()
        sync(dev)
    times: dict = {k: [] for k in fns}
    start = time.perf_counter()
    while (min(len(v) for v in times.values()) < repeats
           and (not times[next(iter(times))] or time.perf_counter() - start < budget_s * len(fns))):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(dev)
            times[k].append(time.perf_counter() - t)
    return {k: {"median_s": statistics.median(v), "best_s": min(v), "calls": len(v)} for k, v in times.items()}


def time_compositing(nl: int, batch: int, res: int, plan, dev: torch.device, args) -> dict:
    """The compositing step alone, both paths alternating, on one chunk of frames as ``Renderer`` runs
    it (its CPU chunking: one frame at a time for these sizes): ms per frame."""
    from gramcast.avatar.renderer import CPU_CHUNK_LAYER_PIXELS, composite_layers, composite_ordered

    frames = batch if dev.type != "cpu" else max(1, min(batch, CPU_CHUNK_LAYER_PIXELS // (nl * res * res)))
    g = torch.Generator().manual_seed(0)
    shape = (nl, frames, res, res)
    rgb = (torch.rand(nl, 3, *shape[1:], generator=g) * 2 - 1).to(dev)
    alpha, depth = torch.rand(shape, generator=g).to(dev), (0.9 + 0.2 * torch.rand(shape, generator=g)).to(dev)
    valid = (torch.rand(shape, generator=g) > 0.1).to(dev)
    t = time_alternating({"ordered": lambda: composite_ordered(rgb, alpha, depth, valid, plan),
                          "general": lambda: composite_layers(rgb, alpha, depth, valid)}, dev, args.repeats,
                         args.budget / 4)
    out = {f"composite_{k}_ms": 1e3 * v["median_s"] / frames for k, v in t.items()}
    out["composite_ordered_over_general"] = out["composite_general_ms"] / out["composite_ordered_ms"]
    return out


def poses_for(batch: int) -> np.ndarray:
    yaw = np.linspace(-0.4, 0.4, batch) if batch > 1 else np.array([0.2])
    return np.stack([yaw, 0.1 * np.ones_like(yaw)], -1).astype(np.float32)


def graminverter_avatar():
    """The sample enrolled by random-init ``small`` inverter networks: 24 layers bounded by the portrait's
    matte, the background manifold dropped. The layer structure of a product avatar (no trained bundle
    ships yet); its colours mean nothing."""
    import gramcast
    from enroll import random_inverter

    return gramcast.enroll(SAMPLE, method="graminverter", weights=random_inverter("small", torch.device("cpu")),
                           device="cpu")


def make_avatars(with_enrolled: bool = True, presets=("tiny", "small")) -> tuple[list[dict], dict]:
    """The enrolled sample (``mesh``, timed; and ``graminverter_avatar``) and the bakes of ``presets``
    with their models."""
    import gramcast
    from gramcast.avatar import bake_model
    from gramcast.model import GRAMModel

    avatars, enroll = [], {}
    if with_enrolled:
        t = time.perf_counter()
        enrolled = gramcast.enroll(SAMPLE, device="cpu")
        first = time.perf_counter() - t
        t = time.perf_counter()
        enrolled = gramcast.enroll(SAMPLE, device="cpu")
        warm = time.perf_counter() - t
        enroll = {"method": "mesh", "image": SAMPLE.name, "first_call_s": round(first, 2), "warm_s": round(warm, 2),
                  "layers": enrolled.num_layers, "texture_resolution": enrolled.texture_resolution}
        avatars.append({"name": "enrolled (mesh)", "avatar": enrolled, "model": None, "ws": None})
        avatars.append({"name": "graminverter (random small)", "avatar": graminverter_avatar(), "model": None,
                        "ws": None})
    for preset in presets:
        torch.manual_seed(0)
        model = GRAMModel.from_config(preset).eval().requires_grad_(False)
        ws = model.sample_ws(1, seed=0)
        t = time.perf_counter()
        avatar = bake_model(model, ws)                               # geometry 128², textures 256²
        bake_s = time.perf_counter() - t
        from gramcast.avatar.renderer import compositing_plan

        t = time.perf_counter()
        plan = compositing_plan(avatar)                             # what Renderer(avatar) checks at load
        avatars.append({"name": f"{preset} bake", "avatar": avatar, "model": model, "ws": ws, "preset": preset,
                        "bake_s": round(bake_s, 2), "order_check_s": round(time.perf_counter() - t, 3),
                        "plan": plan.describe() if plan is not None else None})
    return avatars, enroll


def bench_device(dev: torch.device, avatars: list[dict], args) -> list[dict]:
    from gramcast.avatar import Renderer
    from gramcast.avatar.onnx_export import OnnxRenderer, default_providers

    rows = []
    onnx_providers = default_providers(dev)
    if dev.type == "cuda" and onnx_providers[0] != "CUDAExecutionProvider":
        onnx_providers = None                     # no CUDA onnxruntime: the CPU numbers stand for it
    for entry in avatars:
        avatar = entry["avatar"]
        torch_r = Renderer(avatar, device=dev)
        general_r = Renderer(avatar, device=dev, compositing="general") if torch_r.compositing == "ordered" else None
        eager_r = Renderer(avatar, device=dev, cuda_graphs=False) if torch_r.cuda_graphs else None
        onnx_r = OnnxRenderer(avatar, providers=onnx_providers, threads=args.threads) if onnx_providers else None
        model = entry["model"].to(dev) if entry["model"] is not None else None
        ws = entry["ws"].to(dev) if entry["ws"] is not None else None
        for res in args.sizes:
            export_s = None
            if onnx_r is not None:
                t = time.perf_counter()
                onnx_r.session(res)
                export_s = time.perf_counter() - t
            for batch in args.batches:
                p = poses_for(batch)
                pt = torch.from_numpy(p)
                row = {"device": str(dev), "avatar": entry["name"], "layers": avatar.num_layers,
                       "resolution": res, "batch": batch, "compositing": torch_r.compositing}
                fns = {"torch": lambda: torch_r.render(pt, res)}
                if general_r is not None:
                    fns["torch_general"] = lambda: general_r.render(pt, res)
                if eager_r is not None:
                    fns["torch_eager"] = lambda: eager_r.render(pt, res)
                tt = time_alternating(fns, dev, args.repeats, args.budget)
                for k, v in tt.items():
                    row[f"{k}_fps"] = batch / v["best_s"]
                    row[f"{k}_median_fps"] = batch / v["median_s"]
                if general_r is not None:
                    row["ordered_over_general"] = row["torch_fps"] / row["torch_general_fps"]
                    row["ordered_over_general_median"] = row["torch_median_fps"] / row["torch_general_median_fps"]
                    row.update(time_compositing(avatar.num_layers, batch, res, torch_r.plan, dev, args))
                if onnx_r is not None:
                    to = time_calls(lambda: onnx_r.render(p, res), torch.device("cpu"), args.repeats, args.budget)
                    row["onnx_fps"] = batch / to["best_s"]
                    row["onnx_median_fps"] = batch / to["median_s"]
                    row["onnx_over_torch"] = row["onnx_fps"] / row["torch_fps"]
                    row["onnx_export_and_session_s"] = round(export_s, 2)
                if model is not None:
                    def full():
                        with torch.no_grad():
                            model.render(ws, pt.to(dev), resolution=res)
                    # one call of the full model takes seconds: no warm-up call beyond the first size
                    tf = time_paired(full, fns["torch"], dev, max(2, args.repeats // 4), args.budget,
                                     warmup=(res == args.sizes[0] and batch == args.batches[0]))
                    row["full_fps"] = batch / tf["best_s"]
                    row["full_median_fps"] = batch / tf["median_s"]
                    row["cached_over_full"] = row["torch_fps"] / row["full_fps"]
                    row["cached_over_full_median"] = row["torch_median_fps"] / row["full_median_fps"]
                    row["cached_over_full_paired"] = tf["paired"]
                    if general_r is not None:
                        row["general_over_full"] = row["torch_general_fps"] / row["full_fps"]
                if eager_r is not None:
                    row["graphed_over_eager"] = row["torch_fps"] / row["torch_eager_fps"]
                    row["graphs_disabled"] = torch_r.cuda_graph_fallback(res)
                rows.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
                print_row(rows[-1])
                if eager_r is not None:
                    print(f"    CUDA graphs: {row['torch_fps']:.1f} fps against {row['torch_eager_fps']:.1f} eager "
                          f"({row['graphed_over_eager']:.2f}x)" + (f"; disabled: {row['graphs_disabled']}"
                                                                    if row["graphs_disabled"] else ""), flush=True)
        if model is not None:
            entry["model"].to("cpu")
    return rows


HEADER = (f"{'device':>6} {'avatar':>27} {'L':>3} {'size':>5} {'batch':>5} {'path':>8} | {'torch fps':>9} {'(median)':>8} "
          f"{'general':>8} {'(median)':>8} {'ord/gen':>7} | {'onnx fps':>9} {'(median)':>8} {'onnx/torch':>10} | "
          f"{'full fps':>9} {'(median)':>8} {'cached/full':>11} {'paired':>6} {'general/full':>12} | {'composite ms: ordered':>21} {'general':>8}")


def print_row(r: dict) -> None:
    def f(key, fmt, suffix=""):
        return format(r[key], fmt) + suffix if key in r else "-"
    print(f"{r['device']:>6} {r['avatar']:>27} {r['layers']:>3} {r['resolution']:>5} {r['batch']:>5} "
          f"{r['compositing']:>8} | {f('torch_fps', '.1f'):>9} {f('torch_median_fps', '.1f'):>8} "
          f"{f('torch_general_fps', '.1f'):>8} {f('torch_general_median_fps', '.1f'):>8} "
          f"{f('ordered_over_general', '.2f', 'x'):>7} | {f('onnx_fps', '.1f'):>9} "
          f"{f('onnx_median_fps', '.1f'):>8} {f('onnx_over_torch', '.2f', 'x'):>10} | "
          f"{f('full_fps', '.2f'):>9} {f('full_median_fps', '.2f'):>8} {f('cached_over_full', '.0f', 'x'):>11} {f('cached_over_full_paired', '.0f', 'x'):>6} "
          f"{f('general_over_full', '.0f', 'x'):>12} | {f('composite_ordered_ms', '.1f'):>21} "
          f"{f('composite_general_ms', '.1f'):>8}", flush=True)


def goals(rows: list[dict]) -> dict:
    cpu = [r for r in rows if r["device"] == "cpu"]
    stream = [r for r in cpu if r["avatar"].startswith("enrolled") and r["resolution"] == 256 and r["batch"] == 1]
    speedups = [r["cached_over_full"] for r in rows if "cached_over_full" in r]
    out = {}
    if stream:
        out["cpu_fps_256_one_stream"] = stream[0]["torch_fps"]
        out["cpu_fps_256_one_stream_goal_met"] = stream[0]["torch_fps"] >= GOAL_FPS_256
    bakes_256 = [r for r in cpu if "bake" in r["avatar"] and r["resolution"] == 256 and r["batch"] == 1]
    for r in bakes_256:
        out[f"cpu_fps_256_{r['avatar'].split()[0]}_bake"] = r["torch_fps"]
    for r in cpu:       # a product avatar's layer structure (24 layers, matte-bounded): one stream
        if r["avatar"].startswith("graminverter") and r["resolution"] == 256 and r["batch"] == 1:
            out["cpu_fps_256_graminverter"] = r["torch_fps"]
            out["cpu_fps_256_graminverter_goal_met"] = r["torch_fps"] >= GOAL_FPS_256
    if speedups:
        out["min_cached_over_full"] = min(speedups)
        out["cached_over_full_goal_met"] = min(speedups) >= GOAL_SPEEDUP
        out["cached_over_full_goal_met_in"] = [f"{r['avatar']} {r['resolution']} b{r['batch']}" for r in rows
                                               if r.get("cached_over_full", 0) >= GOAL_SPEEDUP]
        # the cached frame costs what its layers cost, the full one what its model costs: per model
        out["cached_over_full_min_per_model"] = {
            name: min(r["cached_over_full"] for r in rows if r["avatar"] == name and "cached_over_full" in r)
            for name in dict.fromkeys(r["avatar"] for r in rows if "cached_over_full" in r)}
        out["cached_over_full_paired_min_per_model"] = {
            name: min(r["cached_over_full_paired"] for r in rows if r["avatar"] == name and "cached_over_full" in r)
            for name in out["cached_over_full_min_per_model"]}
    general = [r["general_over_full"] for r in rows if "general_over_full" in r]
    if general:
        out["min_general_over_full"] = min(general)
    gains = [r["ordered_over_general"] for r in rows if "ordered_over_general" in r]
    if gains:
        out["ordered_over_general_range"] = [min(gains), max(gains)]
    comp = [r["composite_ordered_over_general"] for r in rows if "composite_ordered_over_general" in r]
    if comp:
        out["composite_ordered_over_general_range"] = [min(comp), max(comp)]
    # the product case: an enrolled one-layer avatar against rendering the smallest full model
    for r in stream:
        full = [f for f in cpu if f["avatar"] == "tiny bake" and f["resolution"] == 256 and f["batch"] == 1
                and "full_fps" in f]
        if full:
            out["enrolled_over_full_tiny_256"] = r["torch_fps"] / full[0]["full_fps"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=20, help="calls per measurement at most (default 20)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds per measurement at most (default 2)")
    ap.add_argument("--threads", type=int, help="CPU threads for torch and onnxruntime (default: torch's)")
    ap.add_argument("--device", default="auto", help="auto: the CPU, and CUDA too where available; or cpu / cuda")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a shorter budget (about a minute)")
    ap.add_argument("--tune-malloc", action="store_true",
                    help="keep freed memory resident in glibc's heap (see tune_malloc); the default allocator "
                         "returns big blocks to the OS and every frame faults them in again")
    ap.add_argument("--no-enrolled", action="store_true", help="the bakes only (no enrollment, no face models)")
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=["tiny", "small", "paper"],
                    help="GRAMModel presets to bake and race against their full model (default: tiny small; "
                         "paper: the paper's 256² generator, whose full render takes seconds a frame on a CPU)")
    ap.add_argument("--json", type=Path, help="also write the results here (docs/bench/render_cache_2core.json)")
    args = ap.parse_args(argv)
    malloc_tuned = tune_malloc() if args.tune_malloc else False
    if args.quick:
        args.repeats, args.budget = 5, 0.5
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = args.threads or torch.get_num_threads()
    devices = [torch.device("cpu")]
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: CPU only")
    if args.device == "cuda" and torch.cuda.is_available():
        devices = [torch.device("cuda")]

    import onnxruntime as ort

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    avatars, enroll = make_avatars(not args.no_enrolled, tuple(args.presets))
    print(f"torch {torch.__version__}, {args.threads} CPU threads ({platform.processor() or platform.machine()}), "
          f"onnxruntime {ort.__version__} {ort.get_available_providers()}, "
          f"repeats <= {args.repeats} / {args.budget:.1f} s per measurement, "
          f"malloc {'tuned' if malloc_tuned else 'default'}")
    if enroll:
        print(f"enrollment (mesh method, {SAMPLE.name}): first call {enroll['first_call_s']:.2f} s "
              f"(loading the face and matting models included), warm call {enroll['warm_s']:.2f} s")
    print("bakes: " + ", ".join(f"{a['name']} {a['avatar'].num_layers} layers in {a['bake_s']:.1f} s "
                                f"(order check {a['order_check_s']:.2f} s: {a['plan'] or 'layers cross, general path'})"
                                for a in avatars if "bake_s" in a))
    print(HEADER)
    rows = []
    for dev in devices:
        rows += bench_device(dev, avatars, args)
    g = goals(rows)
    if "cpu_fps_256_one_stream" in g:
        print(f"goal: >= {GOAL_FPS_256:.0f} frames/s at 256² for one stream on the CPU ({args.threads} thread(s)): "
              f"{g['cpu_fps_256_one_stream']:.1f} ({'met' if g['cpu_fps_256_one_stream_goal_met'] else 'NOT met'}); "
              "multi-layer bakes: " + ", ".join(f"{k.split('_')[3]} {v:.1f}" for k, v in g.items() if k.endswith("_bake"))
              + (f"; graminverter avatar {g['cpu_fps_256_graminverter']:.1f}"
                 if "cpu_fps_256_graminverter" in g else ""))
    if "min_cached_over_full" in g:
        print(f"goal: cached >= {GOAL_SPEEDUP:.0f}x faster than the full model: smallest ratio "
              f"{g['min_cached_over_full']:.0f}x ({'met' if g['cached_over_full_goal_met'] else 'NOT met'}; "
              f"met in {', '.join(g['cached_over_full_goal_met_in']) or 'none'}); general compositing: smallest "
              f"{g.get('min_general_over_full', float('nan')):.0f}x; smallest per bake: "
              + ", ".join(f"{k} {v:.0f}x" for k, v in g["cached_over_full_min_per_model"].items())
              + "; paired (each full call against the cached calls around it): "
              + ", ".join(f"{k} {v:.0f}x" for k, v in g["cached_over_full_paired_min_per_model"].items()))
    if "ordered_over_general_range" in g:
        lo, hi = g["ordered_over_general_range"]
        print(f"ordered / general compositing, whole frame: {lo:.2f}x .. {hi:.2f}x" + (
            " ; compositing step alone: {:.1f}x .. {:.1f}x".format(*g["composite_ordered_over_general_range"])
            if "composite_ordered_over_general_range" in g else ""))
    if "enrolled_over_full_tiny_256" in g:
        print(f"enrolled 1-layer avatar vs the full tiny model at 256², batch 1: {g['enrolled_over_full_tiny_256']:.0f}x")
    result = {"benchmark": "render_cache", "torch": torch.__version__, "onnxruntime": ort.__version__,
              "threads": args.threads, "repeats": args.repeats, "budget_s": args.budget, "quick": args.quick,
              "malloc_tuned": malloc_tuned,
              "enrollment": enroll, "bakes": {a["name"]: a["bake_s"] for a in avatars if "bake_s" in a},
              "compositing_plans": {a["name"]: a["plan"] for a in avatars if "bake_s" in a},
              "order_check_s": {a["name"]: a["order_check_s"] for a in avatars if "bake_s" in a},
              "rows": rows, "goals": g, "wall_s": round(time.perf_counter() - t0, 1)}
    print(f"total {result['wall_s']:.0f} s")
    emit(result, args.json, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
