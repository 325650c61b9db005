"""GRAM full-model rendering: the paper's scheme (intersections at 1/4 resolution, upsampled)
against dense intersections at full resolution, side by side in one run.

    python bench/render_model.py [--preset small] [--sizes 64 128 256] [--repeats 3] [--device auto] [--json out.json]

Prints ms/frame for both, the speed-up ratio, and peak memory (CUDA: max allocated; CPU: peak
resident-set growth during the render, from Linux's VmHWM), and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from gramcast.device import resolve_device
from gramcast.model import GRAMConfig, GRAMModel


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak_rss() -> float:
    """Reset Linux's peak-RSS counter (VmHWM) and return the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def time_render(model: GRAMModel, ws, pose, res: int, factor: int, repeats: int, dev) -> tuple[float, float]:
    """Median ms per frame and peak memory (MB) of ``model.render`` at one setting."""
    with torch.no_grad():
        model.render(ws, pose, resolution=res, lowres_factor=factor)  # warm-up
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        rss0 = _reset_peak_rss()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.render(ws, pose, resolution=res, lowres_factor=factor)
            _sync(dev)
            times.append((time.perf_counter() - t) * 1000.0 / ws.shape[0])
        mem = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else max(_status_mb("VmHWM") - rss0, 0.0)
    return statistics.median(times), mem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", help="model sizes (tiny | small | paper)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="64 and 128 only, one repeat")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.repeats = [64, 128], 1
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    model = GRAMModel.from_config(GRAMConfig.preset(args.preset)).to(dev).eval()
    ws = model.sample_ws(args.batch, seed=0).to(dev)
    pose = torch.tensor([[0.3, 0.1]], device=dev).expand(args.batch, 2)
    rows = []
    print(f"device {dev}, preset {args.preset}, batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"{'size':>6} {'1/4-res ms':>11} {'dense ms':>10} {'speed-up':>9} {'1/4 MB':>8} {'dense MB':>9}")
    for res in args.sizes:
        model.config = replace(model.config, resolution=res)
        fast_ms, fast_mb = time_render(model, ws, pose, res, 4, args.repeats, dev)
        dense_ms, dense_mb = time_render(model, ws, pose, res, 1, args.repeats, dev)
        row = {"resolution": res, "lowres_ms": round(fast_ms, 2), "dense_ms": round(dense_ms, 2),
               "speedup": round(dense_ms / fast_ms, 2), "lowres_peak_mb": round(fast_mb, 1),
               "dense_peak_mb": round(dense_mb, 1)}
        rows.append(row)
        print(f"{res:>6} {fast_ms:>11.1f} {dense_ms:>10.1f} {dense_ms / fast_ms:>8.2f}x {fast_mb:>8.1f} {dense_mb:>9.1f}",
              flush=True)
    result = {"benchmark": "render_model", "device": str(dev), "preset": args.preset, "batch": args.batch,
              "threads": torch.get_num_threads(), "rows": rows}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
