"""GRAM full-model rendering: the paper's scheme (intersections at 1/4 resolution, upsampled)
against dense intersections at full resolution, side by side in one run.

    python bench/render_model.py [--preset small] [--sizes 64 128 256] [--repeats 3] [--quick]
                                 [--device auto] [--json out.json]

For each output size and both schemes it times, per frame (median of ``--repeats``):
  * ``intersect``: the ray/manifold search alone (what the 1/4-resolution scheme speeds up),
  * ``frame``: a whole frame from already synthesised tri-planes (intersections + decoder + compositing;
    what rendering one identity at a new pose costs),
  * and once per run the tri-plane synthesis Ψ (per identity, independent of the output size),
and the peak memory of a frame: CUDA max allocated above the baseline, or on CPU the peak resident
set size above the baseline (Linux: VmHWM after resetting it through /proc/self/clear_refs, with
glibc told to unmap freed blocks so RSS follows live memory; elsewhere the ru_maxrss delta, which only
sees growth past the process's earlier peak).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

from _report import emit, sync

import torch

from gramcast import camera
from gramcast.device import resolve_device
from gramcast.model import GRAMConfig, GRAMModel


def _return_freed_memory_to_the_os() -> bool:
    """Make glibc serve big blocks with mmap (unmapped on free) at a fixed threshold.

    By default glibc raises its mmap threshold after large frees and keeps later blocks in the heap,
    so freed tensors stay resident and an RSS peak would hide a render's real working set.
    """
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16))  # M_MMAP_THRESHOLD = 64 KiB
    except (OSError, AttributeError):
        return False


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory (MB) above the level at ``__enter__``."""

    def __init__(self, dev: torch.device):
        self.dev, self.mb, self.method = dev, 0.0, ""

    def __enter__(self):
        if self.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.dev)
            self.base = torch.cuda.memory_allocated(self.dev)
            self.method = "cuda max_memory_allocated"
            return self
        self.base = _proc_status_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
            self.method = "VmHWM - VmRSS"
        except OSError:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            self.method = "ru_maxrss delta"
        return self

    def __exit__(self, *exc):
        if self.dev.type == "cuda":
            self.mb = (torch.cuda.max_memory_allocated(self.dev) - self.base) / 2**20
        elif self.method == "VmHWM - VmRSS":
            self.mb = max((_proc_status_mb("VmHWM") or 0.0) - self.base, 0.0)
        else:
            self.mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - self.base, 0.0)
        return False


def median_ms(fn, repeats: int, dev: torch.device, per: int) -> float:
    fn()  # warm-up (allocator, thread pools, cuDNN choices)
    sync(dev)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t) * 1000.0 / per)
    return statistics.median(times)


def measure(model: GRAMModel, planes, pose, res: int, factor: int, repeats: int, dev) -> dict:
    b = planes.shape[0]
    c2w = camera.pose_to_c2w(pose)
    origins, dirs = camera.generate_rays(c2w, res, res)
    intersect_ms = median_ms(lambda: model.intersect(origins, dirs, lowres_factor=factor), repeats, dev, b)
    frame = lambda: model.render_planes(planes, pose, resolution=res, lowres_factor=factor)  # noqa: E731
    frame_ms = median_ms(frame, repeats, dev, b)
    with PeakMemory(dev) as mem:
        frame()
        sync(dev)
    return {"intersect_ms": intersect_ms, "frame_ms": frame_ms, "peak_mb": mem.mb, "memory_method": mem.method}


def measure_training_step(model: GRAMModel, ws, pose, res: int, factor: int, dev) -> dict:
    """Forward + backward of a render loss through every parameter (what a GAN step pays per image):
    here autograd keeps every field evaluation, so the 1/4-resolution search saves memory too."""
    def step():
        model.zero_grad(set_to_none=True)
        out = model.render(ws, pose, resolution=res, lowres_factor=factor)
        (out.rgb.square().mean() + out.depth.mean()).backward()

    ms = median_ms(step, 1, dev, ws.shape[0])
    with PeakMemory(dev) as mem:
        step()
        sync(dev)
    model.zero_grad(set_to_none=True)
    return {"ms": ms, "peak_mb": mem.mb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", help="model sizes (tiny | small | paper); default small")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--factor", type=int, default=4, help="low-resolution factor of the paper's scheme")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="64² and 128² only, one repeat")
    ap.add_argument("--grad-sizes", type=int, nargs="*", default=[64, 128],
                    help="sizes at which to also measure a training step (forward + backward); "
                         "dense 256² with grad needs several GB")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [s for s in args.sizes if s <= 128] or [64], 1
        args.grad_sizes = [s for s in args.grad_sizes if s <= 64]
    dev = resolve_device(args.device)
    fixed_malloc = dev.type == "cpu" and _return_freed_memory_to_the_os()
    torch.manual_seed(0)
    model = GRAMModel.from_config(GRAMConfig.preset(args.preset)).to(dev).eval().requires_grad_(False)
    cfg = model.config
    pose = torch.tensor([[0.3, 0.1]], device=dev).expand(args.batch, 2)
    with torch.no_grad():
        ws = model.sample_ws(args.batch, seed=0)
        synth_ms = median_ms(lambda: model.synthesize_planes(ws), args.repeats, dev, args.batch)
        planes = model.synthesize_planes(ws)
        rows = []
        print(f"device {dev}, preset {args.preset} ({cfg.num_manifolds} manifolds, {cfg.samples_per_ray} samples/ray, "
              f"planes {cfg.plane_resolution}²x{cfg.plane_channels}), batch {args.batch}, "
              f"torch threads {torch.get_num_threads()}, repeats {args.repeats}")
        print(f"tri-plane synthesis: {synth_ms:.1f} ms per identity (independent of the output size)")
        print(f"{'size':>5} | {'intersect ms':>12} {'dense':>8} {'x':>6} | {'frame ms':>9} {'dense':>8} {'x':>6} | "
              f"{'+synth x':>8} | {'peak MB':>8} {'dense':>8}")
        for res in args.sizes:
            fast = measure(model, planes, pose, res, args.factor, args.repeats, dev)
            dense = measure(model, planes, pose, res, 1, args.repeats, dev)
            row = {
                "resolution": res,
                "lowres_intersect_ms": round(fast["intersect_ms"], 2), "dense_intersect_ms": round(dense["intersect_ms"], 2),
                "intersect_speedup": round(dense["intersect_ms"] / fast["intersect_ms"], 2),
                "lowres_frame_ms": round(fast["frame_ms"], 2), "dense_frame_ms": round(dense["frame_ms"], 2),
                "frame_speedup": round(dense["frame_ms"] / fast["frame_ms"], 2),
                "with_synthesis_speedup": round((dense["frame_ms"] + synth_ms) / (fast["frame_ms"] + synth_ms), 2),
                "lowres_peak_mb": round(fast["peak_mb"], 1), "dense_peak_mb": round(dense["peak_mb"], 1),
            }
            rows.append(row)
            print(f"{res:>5} | {fast['intersect_ms']:>12.1f} {dense['intersect_ms']:>8.1f} {row['intersect_speedup']:>5.1f}x | "
                  f"{fast['frame_ms']:>9.1f} {dense['frame_ms']:>8.1f} {row['frame_speedup']:>5.1f}x | "
                  f"{row['with_synthesis_speedup']:>7.2f}x | {fast['peak_mb']:>8.1f} {dense['peak_mb']:>8.1f}", flush=True)
    train_rows = []
    if args.grad_sizes:
        model.requires_grad_(True)
        ws = ws.detach()
        print(f"training step (forward + backward through all parameters), batch {args.batch}:")
        print(f"{'size':>5} | {'1/4-res ms':>10} {'dense':>8} {'x':>6} | {'peak MB':>8} {'dense':>8} {'ratio':>6}")
        for res in args.grad_sizes:
            t_fast = measure_training_step(model, ws, pose, res, args.factor, dev)
            t_dense = measure_training_step(model, ws, pose, res, 1, dev)
            row = {"resolution": res, "lowres_ms": round(t_fast["ms"], 1), "dense_ms": round(t_dense["ms"], 1),
                   "speedup": round(t_dense["ms"] / t_fast["ms"], 2), "lowres_peak_mb": round(t_fast["peak_mb"], 1),
                   "dense_peak_mb": round(t_dense["peak_mb"], 1),
                   "memory_ratio": round(t_fast["peak_mb"] / max(t_dense["peak_mb"], 1e-6), 2)}
            train_rows.append(row)
            print(f"{res:>5} | {t_fast['ms']:>10.1f} {t_dense['ms']:>8.1f} {row['speedup']:>5.1f}x | "
                  f"{t_fast['peak_mb']:>8.1f} {t_dense['peak_mb']:>8.1f} {row['memory_ratio']:>6.2f}", flush=True)
    result = {"benchmark": "render_model", "device": str(dev), "preset": args.preset, "batch": args.batch,
              "factor": args.factor, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "synthesis_ms": round(synth_ms, 2), "memory_method": fast["memory_method"] + (" (glibc mmap threshold fixed)" if fixed_malloc else ""), "config": cfg.to_dict(),
              "rows": rows, "training_rows": train_rows}
    emit(result, args.json, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
