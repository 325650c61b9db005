"""The training loop every stage shares: progress, logging, checkpoints, resume, clean interruption.

A stage supplies the maths (``Stage.train_step``) and its state; the ``Trainer`` supplies the rest.
Each step draws its randomness from a generator seeded by (seed, step, rank), so a resumed run
repeats exactly what an uninterrupted one would have done.
"""
from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from gramcast.errors import CheckpointError
from gramcast.training.engine.checkpoint import STATE_FILE, damaged, load_state, save_state
from gramcast.training.engine.distributed import DistInfo, StepScalars, all_reduce_mean

log = logging.getLogger(__name__)

SCALARS_FILE = "scalars.jsonl"
#: The run's record (``config_record``: stage, configuration, input checkpoints), beside its checkpoints.
RUN_RECORD_FILE = "config.json"


class Stage(Protocol):
    """What the trainer needs from a training stage."""

    def train_step(self, step: int) -> StepScalars:
        """One optimisation step; returns its scalars, which the trainer reduces on the steps it logs."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def log_images(self, writer, step: int) -> None:
        """Optional: add image grids to TensorBoard."""

    def export(self, run_dir: Path) -> None:
        """Write the stage's product (e.g. the EMA generator) into run_dir."""


@dataclass
class LoopConfig:
    steps: int = 1000
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 500
    progress: bool = True
    #: Stop (saving first) once this much wall-clock time has passed: fits a run into a lease.
    max_seconds: float | None = None


def run_mismatch(saved: dict, current: dict) -> str | None:
    """Why a saved run cannot continue under ``current`` (its stage or preset differs, or an input checkpoint
    has other contents than the one it was trained against: ``stage_record``'s ``<input>_id``), else None."""
    for key, option in (("stage", "the {} stage: resume it with `gramcast-train {}`, or give another --out"),
                        ("preset", "a --config {} run: use the same --config to resume it, or give another --out")):
        if saved.get(key) and current.get(key) and saved[key] != current[key]:
            return "is from " + option.format(saved[key], saved[key])
    for key in sorted(k for k in current if k.endswith("_id")):
        if saved.get(key) and current.get(key) and saved[key] != current[key]:
            name = key[:-len("_id")]
            return (f"was trained against another {name} ({saved.get(f'{name}_path', '?')}, model id "
                    f"{saved[key][:12]}; the --{name} given has {current[key][:12]}): resume with the "
                    f"--{name} it was trained against, or give another --out")
    return None


def load_failure(exc: Exception) -> str:
    """The line of a ``load_state_dict`` error that says what differs (its first line only names the module)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return line[:160]


def drop_scalars_after(path: Path, step: int) -> None:
    """Drop the lines of a scalar log past ``step``: a resumed run logs those steps again."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        from gramcast.media_io import atomic_output

        with atomic_output(path) as tmp:
            tmp.write_text("".join(kept))


def _logged_step(line: str) -> float:
    """The step of one scalar-log line; a line cut short by a kill counts as past every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def step_generator(seed: int, step: int, rank: int, device="cpu") -> torch.Generator:
    """The random stream of one step on one rank: independent of how the run was split up."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) * 4099 + rank)
    return g


class _ScalarLog:
    """TensorBoard when it is installed, else JSON lines (the bare GPU machine has no tensorboard)."""

    def __init__(self, run_dir: Path):
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
        except Exception as exc:  # ImportError, or tensorboard's own import errors
            log.warning("TensorBoard unavailable (%s); logging scalars to %s", exc, run_dir / SCALARS_FILE)
        self.jsonl = open(run_dir / SCALARS_FILE, "a")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


class Trainer:
    def __init__(self, stage: Stage, run_dir: Path, loop: LoopConfig, dist_info: DistInfo,
                 config_record: dict | None = None):
        self.stage, self.run_dir, self.loop, self.dist = stage, Path(run_dir), loop, dist_info
        self.config_record = config_record or {}
        self.step = 0
        self._stop_requested = False
        self.interrupted = False
        #: The signal that interrupted the run (SIGINT, SIGTERM), for the exit code; None if none did.
        self.stop_signal: int | None = None
        #: True when the run stopped at ``loop.max_seconds`` (not an interruption: it saved and ended).
        self.out_of_time = False

    # ------------------------------------------------------------------ state
    def save(self) -> None:
        if self.dist.is_main:
            save_state(self.run_dir, {"step": self.step, "stage": self.stage.state_dict(),
                                      "config": json.dumps(self.config_record),
                                      "torch_rng": torch.get_rng_state()})
            self.stage.export(self.run_dir)

    def resume(self) -> bool:
        state = load_state(self.run_dir, map_location=self.dist.device)
        if state is None:
            return False
        path = self.run_dir / STATE_FILE
        try:
            saved_cfg = json.loads(state.get("config", "{}"))
        except (TypeError, ValueError):
            raise damaged(path, "its configuration record does not read") from None
        mismatch = run_mismatch(saved_cfg, self.config_record)
        if mismatch:
            raise CheckpointError(f"{path} {mismatch}")
        if self.config_record and saved_cfg and saved_cfg != self.config_record:
            changed = sorted(k for k in set(saved_cfg) | set(self.config_record)
                             if saved_cfg.get(k) != self.config_record.get(k))
            log.warning("resuming with a changed configuration: %s", ", ".join(changed))
        try:
            self.stage.load_state_dict(state["stage"])
            torch.set_rng_state(state["torch_rng"].cpu())
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # missing networks, other shapes
            why = f"it has no {exc}" if isinstance(exc, KeyError) else load_failure(exc)
            raise CheckpointError(f"{path} does not fit this configuration ({why}): use the same --config "
                                  "and --set as the run that wrote it, or another --out") from None
        self.step = int(state["step"])
        if self.dist.is_main:
            drop_scalars_after(self.run_dir / SCALARS_FILE, self.step)
        return True

    # ------------------------------------------------------------------ loop
    def _on_signal(self, signum, frame) -> None:
        self._stop_requested = True
        self.stop_signal = self.stop_signal or signum

    def _should_stop(self, logged: bool) -> bool:
        """Whether to stop after this step. Ranks must agree (a signal or the clock may reach one
        first), which takes a collective and a read of its result: distributed runs agree on the
        logged steps only, so the other steps queue work without waiting for the device."""
        if not self.dist.distributed:
            return self._stop_requested
        if not logged:
            return False
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.dist.device)
        return bool(all_reduce_mean(flag, self.dist).item() > 0)

    def run(self) -> int:
        """Train up to ``loop.steps``; returns the step reached. Saves on interruption."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            (self.run_dir / RUN_RECORD_FILE).write_text(json.dumps(self.config_record, indent=2))
        logger = _ScalarLog(self.run_dir) if self.dist.is_main else None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        bar = None
        if self.dist.is_main and self.loop.progress:
            try:
                from tqdm import tqdm

                bar = tqdm(total=self.loop.steps, initial=self.step, desc="train", dynamic_ncols=True)
            except ImportError:
                bar = None
        t_last = t_start = time.perf_counter()
        try:
            while self.step < self.loop.steps:
                result = self.stage.train_step(self.step)
                self.step += 1
                if bar is not None:
                    bar.update(1)
                # the same steps on every rank: reducing the scalars is a collective
                logged = self.step % self.loop.log_every == 0 or self.step == 1
                scalars = result.reduce() if logged else None
                if logger is not None and logged:
                    now = time.perf_counter()
                    scalars = {**scalars, "perf/sec_per_step": (now - t_last) / (1 if self.step == 1 else self.loop.log_every)}
                    t_last = now
                    logger.scalars(self.step, scalars)
                    if bar is not None:
                        bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(scalars.items())[:4]})
                    elif self.step % (self.loop.log_every * 10) == 0:
                        print(f"step {self.step}/{self.loop.steps} " +
                              " ".join(f"{k}={v:.4g}" for k, v in scalars.items()), flush=True)
                if logger is not None and logger.writer is not None and self.step % self.loop.image_every == 0:
                    self.stage.log_images(logger.writer, self.step)
                if self.step % self.loop.checkpoint_every == 0:
                    self.save()
                if self.loop.max_seconds is not None and time.perf_counter() - t_start > self.loop.max_seconds:
                    self.out_of_time = True
                    self._stop_requested = True
                if self._should_stop(logged):
                    self.interrupted = not self.out_of_time
                    break
            self.save()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        return self.step
