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
    import dataclasses

    from gramcast.errors import GramcastError
    from gramcast.model import GRAMModel
    from gramcast.training.engine.distributed import init_distributed, shutdown_distributed
    from gramcast.training.engine.trainer import LoopConfig, Trainer
    from gramcast.training.stages.detail import DetailStage, DetailStageConfig

    try:
        cfg = DetailStageConfig.preset(args.config)
    except ValueError as exc:
        raise GramcastError(str(exc)) from None
    cfg = dataclasses.replace(cfg, seed=args.seed, max_images=args.max_images,
                              batch_size=args.batch_size or cfg.batch_size, lr=args.lr or cfg.lr)
    dist = init_distributed(args.device)
    try:
        generator = GRAMModel.load(args.generator, device=dist.device)   # CheckpointError says what is wrong
        try:
            from gramcast.model.encoder import GRAMEncoder
        except ImportError as exc:
            raise GramcastError(f"cannot load the encoder: this gramcast has no encoder module ({exc})") from None
        encoder = GRAMEncoder.load(args.encoder, device=dist.device)
        try:
            stage = DetailStage(cfg, args.data, dist, generator, encoder, run_dir=args.out)
        except FileNotFoundError as exc:
            raise GramcastError(str(exc)) from None
        loop = LoopConfig(steps=args.steps or DEFAULT_STEPS.get(args.config, 1000),
                          checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                          image_every=args.image_every, progress=not args.no_progress)
        record = {"stage": "detail", "preset": args.config, "generator": str(args.generator),
                  "encoder": str(args.encoder), **cfg.to_dict()}
        trainer = Trainer(stage, args.out, loop, dist, config_record=record)
        if args.resume and trainer.resume() and dist.is_main:
            print(f"resumed {args.out} at step {trainer.step}", flush=True)
        step = trainer.run()
        if dist.is_main:
            state = "interrupted" if trainer.interrupted else "finished"
            print(f"{state} at step {step}; detail reconstructor in {args.out / 'detail.safetensors'}", flush=True)
        return 130 if trainer.interrupted else 0
    finally:
        shutdown_distributed()
