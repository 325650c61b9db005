"""``gramcast-train``: train the models gramcast uses, on one CPU process or many GPUs.

    gramcast-train gan --config small --data DATA --out runs/gan [--steps N] [--resume]
    torchrun --nproc_per_node 8 -m gramcast.training.cli gan --config paper --data DATA --out runs/gan

Runs save ``state.pt`` (everything to resume exactly) every ``--checkpoint-every`` steps and when
interrupted (SIGINT/SIGTERM), and export the product (e.g. ``generator_ema.safetensors``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset: tiny | small | paper (default: tiny)")
    p.add_argument("--data", type=Path, required=True, help="folder written by `gramcast prepare-faces`")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, TensorBoard logs)")
    p.add_argument("--steps", type=int, default=None, help="train until this step (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt if it exists")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--image-every", type=int, default=500)
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gramcast-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    gan = sub.add_parser("gan", help="stage 1: the 3D-aware GAN prior (efficient GRAM)")
    _common(gan)
    gan.set_defaults(func=run_gan)
    return parser


DEFAULT_STEPS = {"tiny": 200, "small": 30_000, "paper": 150_000}


def run_gan(args) -> int:
    import dataclasses

    from gramcast.training.engine.distributed import init_distributed, shutdown_distributed
    from gramcast.training.engine.trainer import LoopConfig, Trainer
    from gramcast.training.stages.gan import GANConfig, GANStage

    cfg = GANConfig.preset(args.config)
    cfg = dataclasses.replace(cfg, seed=args.seed, max_images=args.max_images,
                              batch_size=args.batch_size or cfg.batch_size)
    dist = init_distributed(args.device)
    try:
        stage = GANStage(cfg, args.data, dist)
        loop = LoopConfig(steps=args.steps or DEFAULT_STEPS.get(args.config, 1000),
                          checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                          image_every=args.image_every, progress=not args.no_progress)
        trainer = Trainer(stage, args.out, loop, dist,
                          config_record={"stage": "gan", "preset": args.config, **cfg.to_dict()})
        if args.resume and trainer.resume() and dist.is_main:
            print(f"resumed {args.out} at step {trainer.step}", flush=True)
        step = trainer.run()
        if dist.is_main:
            state = "interrupted" if trainer.interrupted else "finished"
            print(f"{state} at step {step}; checkpoint in {args.out}", flush=True)
        return 130 if trainer.interrupted else 0
    finally:
        shutdown_distributed()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
