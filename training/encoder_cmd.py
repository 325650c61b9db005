"""`gramcast-train` subcommands of the general inversion stage (paper Sec. 3.2): encoder, then tune.

    gramcast-train encoder --generator runs/gan/generator_ema.safetensors --data DATA --out runs/enc \\
        [--config tiny|small|paper] [--steps N] [--resume]
    gramcast-train tune --generator runs/gan/generator_ema.safetensors --encoder runs/enc/encoder.safetensors \\
        --data DATA --out runs/tune [--steps N] [--resume]
    torchrun --nproc_per_node 4 -m gramcast.training.cli encoder --config paper ...

``encoder`` writes ``OUT/encoder.safetensors``, ``tune`` writes ``OUT/generator_tuned.safetensors``
(a normal generator checkpoint); both keep ``OUT/state.pt`` to resume, and TensorBoard logs.
"""
from __future__ import annotations

import argparse
from pathlib import Path

ENCODER_STEPS = {"tiny": 200, "small": 40_000, "paper": 150_000}
TUNE_STEPS = {"tiny": 100, "small": 20_000, "paper": 100_000}
#: Options of cli._common that only the GAN stage (FID/KID) uses.
_GAN_ONLY = ("eval_every", "fid_samples", "inception")


def _options(p: argparse.ArgumentParser) -> None:
    from gramcast.training.cli import _common

    _common(p)
    for action in p._actions:  # hide the GAN's evaluation options; run_* rejects them if given
        if action.dest in _GAN_ONLY:
            action.help = argparse.SUPPRESS
    p.add_argument("--generator", type=Path, required=True,
                   help="frozen pre-trained generator (generator_ema.safetensors of `gramcast-train gan`)")


def register(sub) -> None:
    """Add this module's subcommands to the `gramcast-train` subparsers ``sub``."""
    enc = sub.add_parser("encoder", help="stage 2a: the w+ encoder E_w against a frozen generator (Sec. 3.2)",
                         description="Train the e4e-style w+ encoder to reconstruct the training crops at "
                                     "their own poses through the frozen generator; writes OUT/encoder.safetensors.")
    _options(enc)
    enc.set_defaults(func=run_encoder)
    tune = sub.add_parser("tune", help="stage 2b: fine-tune the generator's Ψ and m around the encoder's codes",
                          description="Pivotal tuning on the whole training set with the trained encoder frozen; "
                                      "only the tri-plane generator and the decoder learn. Writes "
                                      "OUT/generator_tuned.safetensors.")
    _options(tune)
    tune.add_argument("--encoder", type=Path, required=True,
                      help="trained encoder (encoder.safetensors of `gramcast-train encoder`)")
    tune.set_defaults(func=run_tune)


def _check_args(args) -> None:
    """One-line GramcastErrors for inputs that cannot work, before any model is built."""
    from gramcast.errors import CheckpointError, GramcastError
    from gramcast.training.data import read_manifest

    given = [f"--{d.replace('_', '-')}" for d in _GAN_ONLY if getattr(args, d, None) is not None]
    if given:
        raise GramcastError(f"{', '.join(given)}: only the gan stage evaluates FID/KID; drop the option")
    if args.config not in ENCODER_STEPS:
        raise GramcastError(f"unknown --config {args.config!r}; choose from {', '.join(ENCODER_STEPS)}")
    for flag in ("generator", "encoder"):
        path = getattr(args, flag, None)
        if path is not None and not Path(path).is_file():
            raise CheckpointError(f"--{flag} {path}: no such file; check the path (train it with "
                                  f"`gramcast-train {'gan' if flag == 'generator' else 'encoder'}`)")
    try:
        if not read_manifest(args.data):
            raise GramcastError(f"--data {args.data}: the dataset lists no images")
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise GramcastError(f"--data {args.data}: not a prepared dataset ({exc})") from None


def _run(args, stage_name: str, make_stage, cfg, default_steps: dict, inputs: dict) -> int:
    from gramcast.training.engine.distributed import init_distributed, shutdown_distributed
    from gramcast.training.engine.trainer import LoopConfig, Trainer

    dist = init_distributed(args.device)
    try:
        stage = make_stage(cfg, dist)
        # The inputs' content hashes go into the record, so resuming against other files warns.
        record = {"stage": stage_name, "preset": args.config, **cfg.to_dict(),
                  **{f"{k}_path": str(p) for k, p in inputs.items()},
                  **{f"{k}_id": _file_id(p) for k, p in inputs.items()}}
        loop = LoopConfig(steps=args.steps or default_steps.get(args.config, 1000),
                          checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                          image_every=args.image_every, progress=not args.no_progress)
        trainer = Trainer(stage, args.out, loop, dist, config_record=record)
        if args.resume and trainer.resume() and dist.is_main:
            print(f"resumed {args.out} at step {trainer.step}", flush=True)
        step = trainer.run()
        if dist.is_main:
            state = "interrupted" if trainer.interrupted else "finished"
            print(f"{state} at step {step}; checkpoint in {args.out}", flush=True)
        return 130 if trainer.interrupted else 0
    finally:
        shutdown_distributed()


def _file_id(path) -> str | None:
    """The content hash a gramcast checkpoint records in its header (None if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("model_id")


def run_encoder(args) -> int:
    import dataclasses

    from gramcast.training.stages.encoder import EncoderStage, EncoderStageConfig

    _check_args(args)
    cfg = EncoderStageConfig.preset(args.config)
    cfg = dataclasses.replace(cfg, seed=args.seed, max_images=args.max_images,
                              batch_size=args.batch_size or cfg.batch_size)
    return _run(args, "encoder",
                lambda c, dist: EncoderStage(c, args.generator, args.data, dist, run_dir=args.out),
                cfg, ENCODER_STEPS, {"generator": args.generator})


def run_tune(args) -> int:
    import dataclasses

    from gramcast.training.stages.tune import TuneStage, TuneStageConfig

    _check_args(args)
    cfg = TuneStageConfig.preset(args.config)
    cfg = dataclasses.replace(cfg, seed=args.seed, max_images=args.max_images,
                              batch_size=args.batch_size or cfg.batch_size)
    return _run(args, "tune",
                lambda c, dist: TuneStage(c, args.generator, args.encoder, args.data, dist, run_dir=args.out),
                cfg, TUNE_STEPS, {"generator": args.generator, "encoder": args.encoder})
