"""Checkpoint files: safetensors (no pickle) with a JSON header: format, version, config, model id.

One implementation serves every network gramcast saves (the GRAM generator here, the w+ encoder, the
detail reconstructor, and per part the inverter bundle): each names its file kind with a
``CheckpointFormat`` and uses ``save_checkpoint`` / ``load_checkpoint`` (or, for a file holding
several networks, ``read_checkpoint_header``, ``read_tensors``, ``parse_config`` and ``check_state``).

Saving is atomic (``media_io.atomic_output``: temp file in the same folder, then rename): a crash leaves the old
file or none, never a partial one. Loading validates the header, the configuration, every tensor's name, shape and
dtype, the content hash (``model_id``) and finiteness, and raises CheckpointError saying what is wrong and what
to do. The network is built on the meta device and the loaded tensors are assigned, so a paper-size checkpoint
is not first initialised at random.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from gramcast.errors import CheckpointError

FORMAT_VERSION = 1
KIND = "gramcast.gram-generator"


@dataclass(frozen=True)
class CheckpointFormat:
    """A kind of checkpoint file: its header's ``format`` and ``format_version``, and the words
    CheckpointError uses for it."""

    kind: str
    version: int
    #: Short name: "bad {name} configuration", "{name} format version".
    name: str
    #: What a file of this kind is, after "is not a": "gramcast GRAM generator checkpoint".
    what: str
    #: After "no such" when the file is missing: what it is called and how to get one.
    missing: str
    #: What to pass instead when the file is of another kind.
    pass_instead: str
    #: Whether the header must carry the content hash (False: files without one are accepted).
    require_id: bool = True


GRAM_FORMAT = CheckpointFormat(
    KIND, FORMAT_VERSION, name="model", what="gramcast GRAM generator checkpoint",
    missing="checkpoint file; train one with `gramcast-train gan` or check the path",
    pass_instead="pass a generator file", require_id=False)


def model_id(state: dict[str, torch.Tensor]) -> str:
    """A short content hash of the weights (names an avatar's source model; detects corruption)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def config_from_dict(cls, d: dict, what: str):
    """The configuration dataclass ``cls`` from its JSON form ``d`` (a header's ``config``): ValueError
    naming the ``what`` config when ``d`` is not an object, has unknown fields, or holds values that
    cannot work."""
    if not isinstance(d, dict):
        raise ValueError(f"the {what} config must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} config fields {unknown}")
    try:
        return cls(**d)
    except TypeError as exc:  # e.g. a list where a number belongs
        raise ValueError(str(exc)) from None


# ---------------------------------------------------------------------------------------- writing
def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict as contiguous CPU tensors (what safetensors writes)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def float32_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``cpu_state`` with floating-point tensors in float32: what checkpoints hold. Loading builds the
    network in float32 and checks every dtype, so the file of a ``.double()`` or ``.half()`` model
    written as it is could not be read back."""
    return {k: v.float() if v.is_floating_point() else v for k, v in cpu_state(module).items()}


def write_safetensors(path: str | Path, state: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """Write tensors and a string header to ``path`` atomically."""
    from safetensors import torch as st

    from gramcast.media_io import atomic_output

    with atomic_output(path) as tmp:
        st.save_file(state, str(tmp), metadata=header)


def save_checkpoint(module: nn.Module, path: str | Path, fmt: CheckpointFormat,
                    extra_meta: dict[str, str] | None = None) -> str:
    """Write ``module`` (with a ``config.to_dict()``) as a ``fmt`` checkpoint in float32, atomically.
    Returns its model id."""
    state = float32_state(module)
    mid = model_id(state)
    header = {"format": fmt.kind, "format_version": str(fmt.version),
              "config": json.dumps(module.config.to_dict()), "model_id": mid, **(extra_meta or {})}
    write_safetensors(path, state, header)
    return mid


# ---------------------------------------------------------------------------------------- reading
def read_checkpoint_header(path: str | Path, fmt: CheckpointFormat) -> dict[str, str]:
    """The header of ``path`` after checking that the file exists, is safetensors, and is of ``fmt``'s
    kind and version."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {fmt.missing}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign or cut files
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); it may be "
                              "truncated or another kind of file: copy or export it again") from None
    if meta.get("format") != fmt.kind:
        raise CheckpointError(f"{path} is not a {fmt.what} (format {meta.get('format')!r}, "
                              f"expected {fmt.kind!r}); {fmt.pass_instead}")
    version = meta.get("format_version")
    if version != str(fmt.version):
        newer = str(version).isdigit() and int(version) > fmt.version
        hint = "upgrade gramcast to read it" if newer else "re-export it with this gramcast"
        raise CheckpointError(f"{path} has {fmt.name} format version {version!r}; this gramcast reads "
                              f"version {fmt.version}: {hint}")
    return meta


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on the CPU); CheckpointError if the data cannot be read."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: the tensor data cannot be read ({exc}); the file is truncated or "
                              "corrupt: copy or export it again") from None


def build_from_header(path: str | Path, config_json: str | None, build: Callable[[dict], nn.Module],
                      name: str) -> nn.Module:
    """``build(config)`` on the meta device (shapes only: no memory, no random init) from the header's
    JSON configuration; CheckpointError when the configuration is missing or cannot work."""
    try:
        config = json.loads(config_json)
        with torch.device("meta"):
            return build(config)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: bad {name} configuration in the header ({exc}); the file was "
                              "written by another tool or version: re-export it") from None


def check_state(path: str | Path, module: nn.Module, state: dict[str, torch.Tensor],
                expected_id: str | None, require_id: bool = True, part: str = "") -> None:
    """CheckpointError unless ``state`` has exactly ``module``'s tensor names, shapes and dtypes
    (``module`` may be on the meta device), matches the content hash ``expected_id`` (skipped when
    it is None and not ``require_id``), and holds only finite numbers. ``part`` names the network
    in a file holding several."""
    of = f" ({part} weights)" if part else ""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [f"{k} {tuple(state[k].shape)}/{state[k].dtype} (expected {tuple(expected[k].shape)}/"
             f"{expected[k].dtype})" for k in sorted(set(expected) & set(state))
             if expected[k].shape != state[k].shape or expected[k].dtype != state[k].dtype]
    if missing or extra or wrong:
        raise CheckpointError(f"{path}{of} does not match the configuration in its header: missing {missing[:3]}, "
                              f"unexpected {extra[:3]}, wrong shape/dtype {wrong[:3]}; it was written by "
                              "a different version: re-export it")
    if (expected_id is not None or require_id) and model_id(state) != expected_id:
        raise CheckpointError(f"{path}: the {part + ' ' if part else ''}weights do not match the content hash "
                              f"in the header ({expected_id}); the file is corrupt: copy or export it again")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}{of} holds non-finite weights in {bad[:3]}: the training run diverged; "
                              "use an earlier checkpoint")


def assign_state(path: str | Path, module: nn.Module, state: dict[str, torch.Tensor], device) -> nn.Module:
    """Assign checked tensors to a meta-device ``module``; returns it in eval mode on ``device``.
    A state the module rejects (e.g. an impossible extra-state value) is a CheckpointError."""
    from gramcast.device import available_device

    try:
        module.load_state_dict(state, assign=True)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: {str(exc)[:300]}; re-export it") from None
    return module.to(available_device(device)).eval()


def load_checkpoint(path: str | Path, fmt: CheckpointFormat, build: Callable[[dict], nn.Module],
                    device="auto") -> nn.Module:
    """Read and validate a ``fmt`` checkpoint; ``build(config_dict)`` makes the (empty) network.
    Returns it in eval mode on ``device``; CheckpointError says what is wrong with a bad file."""
    meta = read_checkpoint_header(path, fmt)
    module = build_from_header(path, meta.get("config"), build, fmt.name)
    state = read_tensors(path)
    check_state(path, module, state, meta.get("model_id"), fmt.require_id)
    return assign_state(path, module, state, device)


# ---------------------------------------------------------------------------------------- the generator
def save_model(model, path: str | Path) -> str:
    """Write ``model`` (a GRAMModel) to ``path`` atomically. Returns its model id.

    InvalidArgumentError, before anything is written, when ``model.config`` no longer describes the
    weights (a field edited after the model was built): loading builds the network from the config in
    the header, and would refuse the file."""
    from gramcast.errors import InvalidArgumentError

    try:
        model.config.validate()
        with torch.device("meta"):
            expected = _build_gram(model.config.to_dict()).state_dict()
    except ValueError as exc:
        raise InvalidArgumentError(f"cannot save: the model's config cannot work ({exc}); build the model "
                                   "from a valid GRAMConfig") from None
    state = model.state_dict()
    wrong = sorted(set(expected) ^ set(state)) + [k for k in sorted(set(expected) & set(state))
                                                  if expected[k].shape != state[k].shape]
    if wrong:
        raise InvalidArgumentError(f"cannot save: model.config no longer describes the weights (e.g. {wrong[:3]}): "
                                   "it was edited after the model was built; edit a config first, then build "
                                   "the model from it (GRAMModel.from_config)")
    return save_checkpoint(model, path, GRAM_FORMAT)


def read_header(path: str | Path) -> dict[str, str]:
    """The checkpoint's metadata after checking that it is a gramcast generator of a version we read."""
    return read_checkpoint_header(path, GRAM_FORMAT)


def _build_gram(config: dict):
    from gramcast.model.config import GRAMConfig
    from gramcast.model.gram import GRAMModel

    return GRAMModel(GRAMConfig.from_dict(config))


def load_model(path: str | Path, device="auto"):
    """Read, validate and return a GRAMModel in eval mode on ``device``."""
    return load_checkpoint(path, GRAM_FORMAT, _build_gram, device)
