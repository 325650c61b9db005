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
                   help="frozen pre-trained generator (generator_ema.safetensors of `gramcast-train gan`, "
                        "or bundled:tiny, the prior that ships)")


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
    from gramcast.model.prior import resolve_generator

    for flag in ("generator", "encoder"):
        path = getattr(args, flag, None)
        if path is not None and flag == "generator":
            path = resolve_generator(path)        # bundled:NAME -> the shipped prior (or its error)
        if path is not None and not Path(path).is_file():
            raise CheckpointError(f"--{flag} {path}: no such file; check the path (train it with "
                                  f"`gramcast-train {'gan' if flag == 'generator' else 'encoder'}`)")
    try:
        if not read_manifest(args.data):
            raise GramcastError(f"--data {args.data}: the dataset lists no images")
    except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
        raise GramcastError(f"--data {args.data}: not a prepared dataset ({exc})") from None


def run_encoder(args) -> int:
    from gramcast.training.engine.launch import launch_stage, stage_config
    from gramcast.training.stages.encoder import EncoderStage, EncoderStageConfig

    _check_args(args)
    cfg = stage_config(EncoderStageConfig, args)
    return launch_stage(args, "encoder", lambda dist: EncoderStage(cfg, args.generator, args.data, dist, args.out),
                        cfg, ENCODER_STEPS, inputs={"generator": args.generator})


def run_tune(args) -> int:
    from gramcast.training.engine.launch import launch_stage, stage_config
    from gramcast.training.stages.tune import TuneStage, TuneStageConfig

    _check_args(args)
    cfg = stage_config(TuneStageConfig, args)
    make = lambda dist: TuneStage(cfg, args.generator, args.encoder, args.data, dist, run_dir=args.out)  # noqa: E731
    return launch_stage(args, "tune", make, cfg, TUNE_STEPS,
                        inputs={"generator": args.generator, "encoder": args.encoder})
