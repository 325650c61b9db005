"""Where a GAN training step's time goes: step time per variant side by side, then a profile.

    python bench/train_step.py --data DATA [--preset small] [--batch 32] [--steps 8] [--warmup 3]
        [--variant r1_every=16 --variant amp=false ...] [--profile-steps 2] [--device auto] [--json out.json]

Each variant is the preset with ``FIELD=VALUE`` overrides of the GAN stage's configuration (the same as
``gramcast-train gan --set``; ``default`` is the preset itself). For each it prints the median seconds per
step and images/s, so one run compares e.g. R1 every step against lazy R1, or bf16 autocast against
float32; ``cudnn_benchmark=false`` turns off cuDNN's algorithm timing, which training turns on. Then it
profiles ``--profile-steps`` steps of the first variant with torch.profiler and prints:

  * the step's named ranges (``gan/data``, ``gan/D_step``, ``gan/G_step``, ``gan/ema``) with their host
    time: on a GPU, a range whose host time is close to the step's wall time is bound by launching
    kernels (Python + dispatch), not by the GPU;
  * kernels launched per step and the device's busy fraction (kernel time over wall time);
  * the operators with the most self time on the device (CUDA) or on the host (CPU).

The first GPU round of the ``small`` GAN ran at 0.42 s per step of 32 images on an H200 (76 images/s);
this is the measurement that says why, in one short call.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _report import emit, sync

import torch

from gramcast.device import resolve_device
from gramcast.training.engine.distributed import DistInfo
from gramcast.training.engine.launch import stage_config
from gramcast.training.stages.gan import GANConfig, GANStage

RANGES = ("gan/data", "gan/D_step", "gan/G_step", "gan/ema")


def make_stage(preset: str, overrides: list[str], batch: int | None, data: Path, dev: torch.device) -> GANStage:
    """The stage as ``gramcast-train gan --config PRESET --batch-size B --set ...`` builds it (a variant's
    own batch_size wins over ``batch``), with evaluation off."""
    import dataclasses

    options = argparse.Namespace(config=preset, seed=0, max_images=None, batch_size=batch, overrides=overrides)
    cfg = dataclasses.replace(stage_config(GANConfig, options), eval_every=0)
    return GANStage(cfg, data, DistInfo(device=dev))


def time_steps(stage: GANStage, steps: int, warmup: int, dev: torch.device) -> list[float]:
    """Seconds of each of ``steps`` training steps after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + steps):
        sync(dev)
        t0 = time.perf_counter()
        stage.train_step(i)
        sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _device_time(evt) -> float:
    """Self device time of a profiler entry in microseconds, whatever this torch calls it."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(evt, name):
            return float(getattr(evt, name))
    return 0.0


def profile_steps(stage: GANStage, steps: int, first_step: int, dev: torch.device, top: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sync(dev)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for i in range(steps):
            stage.train_step(first_step + i)
        sync(dev)
    wall = time.perf_counter() - t0
    averages = prof.key_averages()
    ranges = {e.key: e.cpu_time_total / 1e6 / steps for e in averages if e.key in RANGES}
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    kernel_s = sum(float(getattr(e, "device_time", 0.0) or 0.0) for e in kernels) / 1e6
    ops = [e for e in averages if e.key not in RANGES and not e.key.startswith("ProfilerStep")]
    if dev.type == "cuda":
        ops.sort(key=_device_time, reverse=True)
        top_ops = [{"op": e.key, "device_ms_per_step": _device_time(e) / 1e3 / steps, "calls_per_step": e.count / steps}
                   for e in ops[:top]]
    else:
        ops.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
        top_ops = [{"op": e.key, "host_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                    "calls_per_step": e.count / steps} for e in ops[:top]]
    return {"steps": steps, "wall_s_per_step": wall / steps, "range_host_s_per_step": ranges,
            "kernels_per_step": len(kernels) / steps, "device_busy_fraction": kernel_s / wall if kernels else None,
            "top_ops": top_ops}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True,
                    help="dataset folder (gramcast prepare-faces) or .zip (gramcast-train pack-dataset)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    ap.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE[,FIELD=VALUE]",
                    help="a variant of the preset to time (repeatable; 'default' is the preset)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile-steps", type=int, default=2, help="profiled steps of the first variant (0: none)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    dev = resolve_device(args.device)
    variants = args.variant or ["default"]
    data = args.data
    print(f"device {dev}, preset {args.preset}, torch {torch.__version__}, threads {torch.get_num_threads()}",
          flush=True)
    rows, first = [], None
    for variant in variants:
        overrides = [] if variant == "default" else [v for v in variant.split(",") if v]
        # not a stage field: training sets it for the process (init_distributed), a variant may turn it off
        bench = [v for v in overrides if v.startswith("cudnn_benchmark=")]
        overrides = [v for v in overrides if v not in bench]
        torch.backends.cudnn.benchmark = not bench or bench[-1].split("=", 1)[1].lower() in ("1", "true", "yes")
        stage = make_stage(args.preset, overrides, args.batch, data, dev)
        times = time_steps(stage, args.steps, args.warmup, dev)
        med = statistics.median(times)
        batch = stage.cfg.batch_size
        rows.append({"variant": variant, "batch": batch, "s_per_step": med, "images_per_s": batch / med,
                     "min_s": min(times), "max_s": max(times)})
        print(f"{variant:32s} batch {batch:3d}  {med:8.4f} s/step  {batch / med:8.1f} images/s", flush=True)
        if first is None:
            first = stage
            if dev.type == "cuda":
                rows[-1]["peak_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    base = rows[0]["s_per_step"]
    for r in rows:
        r["speedup_vs_first"] = base / r["s_per_step"]
    prof = None
    if args.profile_steps > 0 and first is not None:
        prof = profile_steps(first, args.profile_steps, args.warmup + args.steps, dev, args.top)
        print(f"profile of {variants[0]}: {prof['wall_s_per_step']:.4f} s/step, "
              f"{prof['kernels_per_step']:.0f} kernels/step, device busy "
              f"{prof['device_busy_fraction'] if prof['device_busy_fraction'] is not None else 'n/a'}")
        for k, v in prof["range_host_s_per_step"].items():
            print(f"  {k:12s} host {v:8.4f} s/step")
        for op in prof["top_ops"]:
            vals = "  ".join(f"{k} {v:.3f}" for k, v in op.items() if k != "op")
            print(f"  {op['op'][:60]:60s} {vals}")
    emit({"benchmark": "train_step", "device": str(dev), "preset": args.preset, "torch": torch.__version__,
          "rows": rows, "profile": prof}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
