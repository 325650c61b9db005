"""Running one training stage from `gramcast-train` options: the code path every stage command shares.

    cfg = stage_config(EncoderStageConfig, args)
    return launch_stage(args, "encoder", lambda dist: EncoderStage(cfg, ..., dist, run_dir=args.out), cfg,
                        ENCODER_STEPS, inputs={"generator": args.generator})

``launch_stage`` joins the process group (torchrun) or runs as one process, builds the stage, records
the configuration (and the input checkpoints' content ids: resuming against other files is refused),
trains to ``--steps`` (resuming with ``--resume``), and returns the exit code: 0, or 130 / 143 when
interrupted by SIGINT / SIGTERM (the state is saved either way).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import signal
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
        return with_overrides(cfg, {"seed": args.seed, "max_images": args.max_images, **given})
    except ValueError as exc:
        raise GramcastError(f"--set: {exc}") from None


def with_overrides(cfg, overrides: dict[str, Any]):
    """``cfg`` with ``overrides`` replaced; a dict given for a nested configuration replaces its fields."""
    changes = {k: with_overrides(getattr(cfg, k), v)
               if dataclasses.is_dataclass(getattr(cfg, k)) and isinstance(v, dict) else v
               for k, v in overrides.items()}
    return dataclasses.replace(cfg, **changes)


def parse_overrides(config_cls, items: list[str]) -> dict[str, Any]:
    """``["r1_gamma=0.5", "betas=[0, 0.99]", "recon_weights.lpips=0"]`` -> ``{"r1_gamma": 0.5, "betas": (0.0,
    0.99), "recon_weights": {"lpips": 0.0}}`` for the fields of ``config_cls``. Values are JSON (a bare
    word is a string); a number is converted to the field's type where that is float or int. A dotted
    name reaches into a nested configuration, and a JSON object given to one sets several of its fields.
    An unknown field or a malformed item is a GramcastError naming it and the fields there are."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GramcastError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set r1_gamma=0.5")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        for path, leaf in _leaves(config_cls, key.split("."), value, item):
            node = out
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = leaf
    return out


def _leaves(config_cls, path: list[str], value, item: str):
    """(field path, typed value) pairs that ``--set item`` sets: one, or one per key of a JSON object
    given to a nested configuration."""
    default = _field_default(config_cls, path, item)
    if dataclasses.is_dataclass(default):
        if not isinstance(value, dict):
            example = dataclasses.fields(default)[0].name
            raise GramcastError(f"--set {item!r}: {'.'.join(path)} is a group of fields; set one "
                                f"({'.'.join(path)}.{example}=...) or several as a JSON object")
        return [leaf for k, v in value.items() for leaf in _leaves(config_cls, [*path, k], v, item)]
    return [(path, _typed(default, value, ".".join(path), item))]


def _field_default(config_cls, path: list[str], item: str):
    """The default value of the (nested) field ``path`` of ``config_cls``; a GramcastError if there is none."""
    cls = config_cls
    for depth, name in enumerate(path):
        if not dataclasses.is_dataclass(cls):
            raise GramcastError(f"--set {item!r}: {'.'.join(path[:depth])} has no fields")
        fields = {f.name for f in dataclasses.fields(cls)}
        if name not in fields:
            raise GramcastError(f"--set {item!r}: {cls.__name__} has no field {name!r}; "
                                f"fields: {', '.join(sorted(fields))}")
        default = getattr(cls(), name)
        cls = type(default)
    return default


def _typed(default, value, key: str, item: str):
    """``value`` (parsed JSON) converted to the type of the field's ``default``, or a GramcastError."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GramcastError(f"--set {item!r}: {key} takes true or false")
        return value
    if isinstance(value, bool):     # JSON true is no number, though Python's bool is an int
        wanted = type(default).__name__ if default is not None else "number, string or null"
        raise GramcastError(f"--set {item!r}: {key} takes a value of type {wanted}, got bool")
    if isinstance(default, float) and isinstance(value, (int, float)):
        value = float(value)
    elif isinstance(default, int) and isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    if default is not None and not isinstance(default, dict) and type(value) is not type(default):
        raise GramcastError(f"--set {item!r}: {key} takes a value of type {type(default).__name__}, "
                            f"got {type(value).__name__}")
    return value


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
    a missing dataset) is a one-line GramcastError. Returns 0, or 130 / 143 when interrupted.
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
    from gramcast.training.engine.run_dir import claim_run_dir

    with claim_run_dir(args.out, resume=args.resume, is_main=dist.is_main):
        return _train_claimed(dist, stage_name, args, cfg, make_stage, default_steps, inputs, done)


def _train_claimed(dist, stage_name: str, args, cfg, make_stage, default_steps: dict, inputs, done) -> int:
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
    return exit_code(trainer)


def exit_code(trainer) -> int:
    """0, or the shell's 128 + N for a run stopped by signal N (130: SIGINT, 143: SIGTERM); a rank that
    stopped because another did reports SIGINT's."""
    if not trainer.interrupted:
        return 0
    return 128 + int(trainer.stop_signal or signal.SIGINT)
