"""Running one training stage from `gramcast-train` options: the code path every stage command shares.

    cfg = stage_config(EncoderStageConfig, args)
    return launch_stage(args, "encoder", lambda dist: EncoderStage(cfg, ..., dist, run_dir=args.out), cfg,
                        ENCODER_STEPS, inputs={"generator": args.generator})

``launch_stage`` joins the process group (torchrun) or runs as one process, builds the stage, records
the configuration (and the input checkpoints' content ids, so resuming against other files warns),
trains to ``--steps`` (resuming with ``--resume``), and returns the exit code: 0, or 130 when
interrupted (the state is saved either way).
"""
from __future__ import annotations

import dataclasses
import gc
import json
from pathlib import Path
from typing import Any, Callable

from gramcast.errors import GramcastError
from gramcast.training.engine.distributed import DistInfo


def stage_config(config_cls, args, **overrides):
    """``config_cls.preset(args.config)`` with the options every stage takes (--seed, --max-images,
    --batch-size) and ``overrides`` applied. An override (or --batch-size) that is None or 0, i.e. an
    option not given, keeps the preset's value. An unknown preset or a refused value is a GramcastError."""
    try:
        cfg = config_cls.preset(args.config)
    except ValueError as exc:
        raise GramcastError(str(exc)) from None
    given = {k: v for k, v in {"batch_size": args.batch_size, **overrides}.items() if v}
    given.update(parse_overrides(config_cls, getattr(args, "overrides", None) or []))
    try:    # a configuration's __post_init__ refuses values its type alone does not rule out
        return dataclasses.replace(cfg, seed=args.seed, max_images=args.max_images, **given)
    except ValueError as exc:
        raise GramcastError(f"--set: {exc}") from None


def parse_overrides(config_cls, items: list[str]) -> dict[str, Any]:
    """``["r1_gamma=0.5", "betas=[0, 0.99]"]`` -> ``{"r1_gamma": 0.5, "betas": (0.0, 0.99)}`` for the
    fields of ``config_cls``. Values are JSON (a bare word is a string); a number is converted to the
    field's type where that is float or int. An unknown field or a malformed item is a GramcastError
    naming it and the fields there are."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GramcastError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set r1_gamma=0.5")
        if key not in fields:
            raise GramcastError(f"--set {item!r}: {config_cls.__name__} has no field {key!r}; "
                                f"fields: {', '.join(sorted(fields))}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        default = getattr(config_cls(), key)
        if isinstance(default, bool) or isinstance(value, bool):
            if not isinstance(value, bool) or not isinstance(default, bool):
                raise GramcastError(f"--set {item!r}: {key} takes true or false")
        elif isinstance(default, float) and isinstance(value, (int, float)):
            value = float(value)
        elif isinstance(default, int) and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if default is not None and not isinstance(default, dict) and type(value) is not type(default):
            raise GramcastError(f"--set {item!r}: {key} takes a value of type {type(default).__name__}, "
                                f"got {type(value).__name__}")
        out[key] = value
    return out


def file_id(path) -> str | None:
    """The content hash a gramcast checkpoint records in its header (None if it has none)."""
    from safetensors import safe_open

    from gramcast.model.prior import resolve_generator

    with safe_open(str(resolve_generator(path)), framework="pt") as f:
        return (f.metadata() or {}).get("model_id")


def stage_record(stage_name: str, preset: str, cfg, inputs: dict[str, Any] | None = None) -> dict:
    """What ``config.json`` and the resume check hold: the stage, its preset, its configuration, and
    the path and content id of every input checkpoint."""
    inputs = inputs or {}
    return {"stage": stage_name, "preset": preset, **cfg.to_dict(),
            **{f"{k}_path": str(p) for k, p in inputs.items()},
            **{f"{k}_id": file_id(p) for k, p in inputs.items()}}


def launch_stage(args, stage_name: str, make_stage: Callable[[DistInfo], Any], cfg, default_steps: dict[str, int],
                 inputs: dict[str, Path] | None = None, done: str | None = None) -> int:
    """Train the stage ``make_stage(dist)`` returns under ``args`` (the options of ``cli._common``).

    ``cfg``: the stage's configuration (recorded); ``default_steps``: per preset, when --steps is not
    given; ``inputs``: the checkpoints the stage reads, by name; ``done``: what the final line says the
    run left (default: where the checkpoint is). A FileNotFoundError while building the stage (e.g.
    a missing dataset) is a one-line GramcastError. Returns 0, or 130 when interrupted.
    """
    from gramcast.training.engine.distributed import init_distributed, shutdown_distributed

    dist = init_distributed(args.device)
    try:
        return _train(dist, stage_name, args, cfg, make_stage, default_steps, inputs, done)
    finally:
        # the stage's DDP wrapper and its gradient buckets go before the process group does: freed after
        # it, at interpreter exit, gloo's threads were torn down unjoined and a rank died with SIGABRT
        gc.collect()
        shutdown_distributed()


def _train(dist, stage_name: str, args, cfg, make_stage, default_steps: dict, inputs, done) -> int:
    """``launch_stage``'s work, in a frame of its own so that the stage is freed when it returns."""
    from gramcast.training.engine.trainer import LoopConfig, Trainer

    try:
        stage = make_stage(dist)
    except FileNotFoundError as exc:
        raise GramcastError(str(exc)) from None
    record = stage_record(stage_name, args.config, cfg, inputs)
    loop = LoopConfig(steps=args.steps or default_steps.get(args.config, 1000),
                      checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                      image_every=args.image_every, progress=not args.no_progress,
                      max_seconds=args.max_minutes * 60.0 if getattr(args, "max_minutes", None) else None)
    trainer = Trainer(stage, args.out, loop, dist, config_record=record)
    resumed = args.resume and trainer.resume()
    if resumed and dist.is_main:
        print(f"resumed {args.out} at step {trainer.step}", flush=True)
    if getattr(args, "init_from", None) is not None and not resumed:
        from gramcast.training.engine.snapshot import apply_snapshot

        trainer.step = apply_snapshot(stage, args.init_from)
        if dist.is_main:
            print(f"warm start from {args.init_from} at step {trainer.step} (fresh optimiser state)", flush=True)
    step = trainer.run()
    if dist.is_main:
        state = ("interrupted" if trainer.interrupted else
                 "stopped at the --max-minutes budget" if trainer.out_of_time else "finished")
        print(f"{state} at step {step}; {done or f'checkpoint in {args.out}'}", flush=True)
    return 130 if trainer.interrupted else 0
