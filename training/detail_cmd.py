"""`gramcast-train detail`: train the detail manifolds reconstructor (GRAMInverter Sec. 3.3-3.4).

    gramcast-train detail --generator runs/tune/generator_tuned.safetensors \\
        --encoder runs/encoder/encoder.safetensors --data DATA --out runs/detail [--config tiny] [--steps N] [--resume]

The generator and the encoder are frozen; the run exports ``detail.safetensors`` (with ``state.pt``
to resume), which `gramcast-train export-inverter --detail` bundles for enrollment.
"""
from __future__ import annotations

from pathlib import Path

DEFAULT_STEPS = {"tiny": 200, "small": 20_000, "paper": 60_000}


def register(sub) -> None:
    """Add this module's subcommands to the `gramcast-train` subparsers ``sub``."""
    from gramcast.training.cli import _common

    p = sub.add_parser("detail", help="stage 4: the detail manifolds reconstructor (GRAMInverter Sec. 3.3)",
                       description=__doc__.split("\n\n")[0] + " The generator (the tuned one) and the encoder "
                                   "are frozen; only the reconstructor learns.")
    _common(p)
    p.add_argument("--generator", type=Path, required=True,
                   help="generator checkpoint (the tune run's generator_tuned.safetensors, or the GAN's)")
    p.add_argument("--encoder", type=Path, required=True,
                   help="encoder checkpoint (the encoder run's encoder.safetensors)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's, 3e-4)")
    p.set_defaults(func=run_detail)


def run_detail(args) -> int:
    from gramcast.training.engine.launch import launch_stage, stage_config
    from gramcast.training.stages.detail import DETAIL_FILE, DetailStage, DetailStageConfig

    cfg = stage_config(DetailStageConfig, args, lr=args.lr)
    # The stage loads the frozen generator and encoder on its device (CheckpointError says what is wrong).
    return launch_stage(args, "detail",
                        lambda dist: DetailStage(cfg, args.data, dist, args.generator, args.encoder, run_dir=args.out),
                        cfg, DEFAULT_STEPS, inputs={"generator": args.generator, "encoder": args.encoder},
                        done=f"detail reconstructor in {args.out / DETAIL_FILE}")
