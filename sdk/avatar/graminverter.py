"""Enrollment method ``graminverter``: the paper's learned inversion (GRAMInverter, Sec. 3.2-3.3).

    aligned crop Î, input pose θ̂ --encoder--> w+ --generator--> coarse render I_w(θ̂)
    (Î, Î - I_w, θ̂) --detail reconstructor--> detail maps (one per manifold)
    generator planes + detail maps --bake--> Avatar (same cache, same render cost as any avatar)

The three networks travel as one *inverter bundle*: a safetensors file (no pickle) whose tensors are
prefixed ``generator.``, ``encoder.`` and ``detail.``, with each network's configuration, a format
version and content hashes in its header. Where the training runs recorded it, the header also says which
generator the encoder was trained against (``encoder_trained_for``) and which one the bundle's generator was
tuned from (``generator_tuned_from``; "" for a GAN run's own generator), and ``load_inverter`` refuses a
bundle whose records prove the encoder was made for another generator. ``gramcast-train export-inverter``
writes it from a finished training run; ``find_inverter`` looks for it (explicit path, ``$GRAMCAST_INVERTER``, the
package's ``assets/graminverter.safetensors``, then ``~/.cache/gramcast/graminverter.safetensors``).

The person matte removes the background: the background manifold is made transparent, and every
texel whose point projects outside the matte at the input view loses its opacity (one view's
silhouette bounds the person's 3D extent: no point of the person projects outside it).
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gramcast import camera
from gramcast.checks import check_options, is_bool, is_finite, whole_in
from gramcast.errors import CheckpointError, GramcastError
from gramcast.model.checkpoint import CheckpointFormat

__all__ = ["Inverter", "InverterConfig", "find_inverter", "require_inverter", "save_inverter", "load_inverter",
           "parts_mismatch", "lineage_mismatch", "enroll_graminverter", "BUNDLE_KIND", "BUNDLE_VERSION",
           "BUNDLE_NAME", "HOW_TO_TRAIN", "LINEAGE_KEYS"]

BUNDLE_KIND = "gramcast.graminverter-bundle"
BUNDLE_VERSION = 1
BUNDLE_NAME = "graminverter.safetensors"
HOW_TO_TRAIN = ("train them with `gramcast-train gan`, `encoder`, `tune` and `detail`, then "
                "`gramcast-train export-inverter --generator G --encoder E --detail D -o graminverter.safetensors`, "
                "and pass the file "
                "(--weights, or $GRAMCAST_INVERTER); or use --method mesh")
_PARTS = ("generator", "encoder", "detail")
BUNDLE_FORMAT = CheckpointFormat(BUNDLE_KIND, BUNDLE_VERSION, name="bundle", what="GRAMInverter bundle",
                                 missing=f"inverter bundle; {HOW_TO_TRAIN}",
                                 pass_instead="export one with `gramcast-train export-inverter`")


@dataclass(frozen=True)
class InverterConfig:
    """Bake sizes (geometry and texture grids; ``None``: from the generator's sizes) and whether the
    background manifold is dropped (the avatar is composited over the app's own background)."""

    geometry_resolution: int = 128
    texture_resolution: int | None = None
    drop_background: bool = True
    matte_threshold: float = 0.5
    #: Optional per-image refinement of the encoder's w+ (Adam steps on the input-view L2 + L1 inside
    #: the matte) before the detail stage; 0 = the paper's single forward pass.
    refine_steps: int = 0
    refine_lr: float = 0.01

    def __post_init__(self) -> None:
        check_options(self, _INVERTER_RULES, "the graminverter method's")


def _inverter_rules() -> dict:
    return {
        "geometry_resolution": (whole_in(16, 512), "a whole number of grid cells from 16 to 512", int),
        "texture_resolution": (lambda v: v is None or whole_in(16, 1024)(v),
                               "None (the generator's) or a whole number of texels from 16 to 1024", int),
        "drop_background": (is_bool, "True or False", bool),
        "matte_threshold": (lambda v: is_finite(v) and 0 < v <= 1, "a matte level above 0 and at most 1", float),
        "refine_steps": (whole_in(0, 10_000), "a whole number of steps from 0 to 10000", int),
        "refine_lr": (lambda v: is_finite(v) and 0 < v <= 1, "a learning rate above 0 and at most 1", float),
    }


_INVERTER_RULES = _inverter_rules()


class Inverter(torch.nn.Module):
    """The three trained networks of GRAMInverter, ready to invert aligned crops."""

    def __init__(self, generator, encoder, detail, meta: dict | None = None):
        super().__init__()
        self.generator, self.encoder, self.detail = generator, encoder, detail
        self.meta = dict(meta or {})
        self._height_grids: dict[tuple[int, float], tuple[Tensor, Tensor]] = {}

    @property
    def resolution(self) -> int:
        return self.generator.config.resolution

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def height_grids(self, resolution: int, extent: float) -> tuple[Tensor, Tensor]:
        """The manifolds as height fields ``(L, G, G)`` and their valid masks at ``resolution``
        (``manifold_height_grid``). They do not depend on the identity: searched once per size, cached."""
        key = (resolution, float(extent))
        if key not in self._height_grids:
            from gramcast.model.detail import manifold_height_grid

            self._height_grids[key] = manifold_height_grid(self.generator, resolution, extent)
        return self._height_grids[key]

    def low_res_heights(self) -> Tensor:
        """The height grid the detail reconstructor samples ``(L, G_lr, G_lr)``."""
        return self.height_grids(self.detail.config.map_resolution, self.detail.config.extent)[0]

    @torch.no_grad()
    def invert(self, images: Tensor, poses: Tensor, mask: Tensor | None = None, refine_steps: int = 0,
               refine_lr: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
        """images ``(B, 3, R, R)`` in [-1, 1] at the generator's resolution, poses ``(B, 2)`` ->
        w+ ``(B, num_ws, w_dim)``, detail maps ``(B, L, C, S, S)``, coarse renders ``(B, 3, R, R)``.
        ``refine_steps`` > 0 refines w+ against the images (``mask`` ``(B, 1, R, R)``: where to compare)."""
        images, poses = images.to(self.device), poses.to(self.device)
        ws = self.encoder(images)
        if refine_steps > 0:
            ws = self.refine(ws, images, poses, mask, refine_steps, refine_lr)
        coarse = self.generator.render(ws, poses).rgb
        detail = self.detail(images, coarse, poses, self.low_res_heights())
        return ws, detail, coarse

    def refine(self, ws: Tensor, images: Tensor, poses: Tensor, mask: Tensor | None, steps: int,
               lr: float = 0.01) -> Tensor:
        """A few Adam steps on w+ ``(B, num_ws, w_dim)`` (generator frozen) lowering the input-view
        L2 + L1 of the coarse render; returns the refined w+. A fast, optional per-image step between
        the encoder's guess and the detail stage (GRAMInverter itself is one forward pass)."""
        mask = torch.ones_like(images[:, :1]) if mask is None else mask.to(images)
        frozen = [p for p in self.generator.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            with torch.enable_grad():
                ws = ws.detach().clone().requires_grad_(True)
                opt = torch.optim.Adam([ws], lr=lr)
                for _ in range(steps):
                    err = (self.generator.render(ws, poses).rgb - images) * mask
                    loss = err.pow(2).mean() + err.abs().mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return ws.detach()


def _to_model_input(crop: np.ndarray, resolution: int) -> Tensor:
    """uint8 crop ``(S, S, 3)`` -> ``(1, 3, R, R)`` in [-1, 1], area-resampled as the training data is."""
    import cv2

    if crop.shape[0] != resolution:
        crop = cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


# ---------------------------------------------------------------------------------------- bundle
#: header entries of the parts' lineage, as far as the training runs recorded it (absent: not recorded)
LINEAGE_KEYS = ("encoder_trained_for", "generator_tuned_from")


def save_inverter(path: str | Path, generator, encoder, detail, meta: dict | None = None,
                  encoder_trained_for: str | None = None, generator_tuned_from: str | None = None) -> None:
    """Write the three networks as one bundle, atomically. ``encoder_trained_for``: the ``model_id`` of the
    generator the encoder was trained against (its file's ``GRAMEncoder.trained_for``);
    ``generator_tuned_from``: the ``model_id`` of the generator ``generator`` was tuned from, "" when it is a
    GAN run's own (untuned) generator. None: not known, nothing is recorded (``load_inverter`` can then not
    judge the pair)."""
    from gramcast.model.checkpoint import cpu_state, model_id, write_safetensors

    state, header = {}, {"format": BUNDLE_KIND, "format_version": str(BUNDLE_VERSION),
                         "meta": json.dumps(meta or {})}
    for name, module in zip(_PARTS, (generator, encoder, detail)):
        part = cpu_state(module)
        state.update({f"{name}.{k}": v for k, v in part.items()})
        header[f"{name}_config"] = json.dumps(module.config.to_dict())
        header[f"{name}_id"] = model_id(part)
    for key, value in zip(LINEAGE_KEYS, (encoder_trained_for, generator_tuned_from)):
        if value is not None:
            header[key] = str(value)
    write_safetensors(path, state, header)


def lineage_mismatch(generator_id: str, encoder_trained_for: str | None, generator_tuned_from: str | None,
                     generator_name: str | None = None) -> str | None:
    """What is wrong (None: nothing that the records prove) when the encoder was trained against generator
    ``encoder_trained_for`` and the bundle's generator is ``generator_id``, tuned from
    ``generator_tuned_from`` ("" : a GAN run's own generator, tuned from nothing). The encoder fits its own
    generator and that generator's tuned versions; where either record is missing the pair cannot be judged
    and is accepted. Export and ``load_inverter`` share this one rule; ``generator_name``: what the message
    calls the generator (default: the bundle's)."""
    if not encoder_trained_for or encoder_trained_for == generator_id or generator_tuned_from is None:
        return None
    if generator_tuned_from == encoder_trained_for:
        return None
    origin = (f"was tuned from generator {generator_tuned_from}" if generator_tuned_from
              else "is a GAN run's own (untuned) generator")
    name = generator_name or f"the bundle's generator {generator_id}"
    return f"was trained against generator {encoder_trained_for}, but {name} {origin}"


def parts_mismatch(generator, encoder, detail) -> tuple[str, str] | None:
    """``(part, what)`` for the first way the encoder or the detail reconstructor does not fit the
    generator (None: they fit). Enrollment feeds both networks the crop at the generator's resolution,
    the generator takes the encoder's w+, and the detail maps are sampled on the generator's manifolds
    and added to its plane features: a part made for another shape fails mid-enrollment, or (the
    encoder's input side) silently sees images at a size it was never trained on. Shapes only: the
    modules may be on the meta device. Export and ``load_inverter`` share this one check."""
    gc, ec, dc = generator.config, encoder.config, detail.config
    if (ec.num_ws, ec.w_dim) != (generator.num_ws, gc.w_dim):
        return "encoder", (f"encodes w+ of {ec.num_ws} x {ec.w_dim}, but the generator takes "
                           f"{generator.num_ws} x {gc.w_dim}")
    if ec.input_resolution != gc.resolution:
        return "encoder", (f"takes {ec.input_resolution}x{ec.input_resolution} images, but enrollment feeds it "
                           f"the generator's {gc.resolution}x{gc.resolution}")
    if dc.num_manifolds != gc.num_manifolds:
        return "detail", f"is made for {dc.num_manifolds} manifolds, but the generator has {gc.num_manifolds}"
    if dc.plane_channels != gc.plane_channels:
        return "detail", (f"makes maps of {dc.plane_channels} channels, but the generator's planes have "
                          f"{gc.plane_channels}")
    if dc.image_resolution != gc.resolution:
        return "detail", (f"takes {dc.image_resolution}x{dc.image_resolution} images, but enrollment feeds it "
                          f"the generator's {gc.resolution}x{gc.resolution}")
    return None


def _header_json(path, header: dict, key: str, what: str):
    """``json.loads`` of a header entry as an object; CheckpointError (not a JSON traceback) when a
    damaged or hand-edited header holds something else there."""
    try:
        value = json.loads(header[key])
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: the header's {key!r} ({what}) is not a JSON object; the file is damaged "
                              "or was edited: export it again with `gramcast-train export-inverter`")
    return value


def _build(name: str, config: dict):
    if name == "generator":
        from gramcast.model.config import GRAMConfig
        from gramcast.model.gram import GRAMModel

        return GRAMModel(GRAMConfig.from_dict(config))
    if name == "encoder":
        from gramcast.model.encoder import EncoderConfig, GRAMEncoder

        return GRAMEncoder(EncoderConfig.from_dict(config))
    from gramcast.model.detail import DetailConfig, DetailReconstructor

    return DetailReconstructor(DetailConfig.from_dict(config))


def load_inverter(path: str | Path, device="auto") -> Inverter:
    """Read and validate a bundle; CheckpointError says what is wrong with a bad file, including parts
    that do not fit together (checked from the header, before the weights are read)."""
    from gramcast.model.checkpoint import (assign_state, build_from_header, check_state, read_checkpoint_header,
                                           read_tensors)

    header = read_checkpoint_header(path, BUNDLE_FORMAT)
    meta = _header_json(path, header, "meta", "the bundle's notes") if "meta" in header else {}
    for name in _PARTS:  # without its hash a part's weights cannot be verified (check_state would say "(None)")
        if not header.get(f"{name}_id"):
            raise CheckpointError(f"{path}: the header has no {name}_id (the {name} weights' content hash); the "
                                  "file is damaged or was not written by gramcast: export it again with "
                                  "`gramcast-train export-inverter`")
    shells = [build_from_header(path, header.get(f"{name}_config"), functools.partial(_build, name), name)
              for name in _PARTS]
    lineage = {key: header[key] for key in LINEAGE_KEYS if key in header}
    unfit = parts_mismatch(*shells)
    if unfit is None:
        wrong = lineage_mismatch(header["generator_id"], lineage.get("encoder_trained_for"),
                                 lineage.get("generator_tuned_from"))
        unfit = None if wrong is None else ("encoder", f"{wrong} (it fits that generator and the ones tuned from it)")
    if unfit is not None:
        part, what = unfit
        raise CheckpointError(f"{path}: its {part} network {what}: the bundle's parts do not work together; "
                              "export it again with `gramcast-train export-inverter` from one training run's "
                              "generator, encoder and detail")
    state = read_tensors(path)
    modules = []
    for name, module in zip(_PARTS, shells):
        part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        check_state(path, module, part, header.get(f"{name}_id"), part=name)
        modules.append(assign_state(path, module, part, device))
    # the part hashes name exactly which weights made an avatar (enrollment records them)
    meta["bundle"] = {f"{name}_id": header[f"{name}_id"] for name in _PARTS}
    if lineage:  # which generator the encoder was trained against (and this one's parent), where recorded
        meta["lineage"] = lineage
    return Inverter(*modules, meta=meta)


def require_inverter(weights: "str | Path | Inverter | None" = None, device="auto") -> Inverter:
    """``weights`` itself when it is an ``Inverter``, else the bundle it names (or ``find_inverter``'s)
    loaded on ``device``; a GramcastError saying how to get one when none is installed."""
    if isinstance(weights, Inverter):
        return weights
    found = find_inverter(weights)
    if found is None:
        raise GramcastError("the graminverter method needs trained weights, and none are installed: "
                            f"{HOW_TO_TRAIN}")
    return load_inverter(found, device)


def find_inverter(path: str | Path | None = None) -> Path | None:
    """The bundle to use: ``path``, else ``$GRAMCAST_INVERTER``, else the packaged bundle, else the user
    cache (``$XDG_CACHE_HOME/gramcast``); None if none of the last two exists.

    A folder (as ``path`` or ``$GRAMCAST_INVERTER``) stands for the ``graminverter.safetensors`` in it,
    as export writes by default; a folder without one is a CheckpointError. ``$GRAMCAST_INVERTER``, once
    set, is always used: a missing file there is a CheckpointError naming the variable, never a silent
    fall back to another installed bundle (the user asked for these weights)."""
    if path is not None:
        return _bundle_in(Path(path), str(path))
    env = os.environ.get("GRAMCAST_INVERTER")
    if env:
        found = _bundle_in(Path(env), f"$GRAMCAST_INVERTER={env}")
        if not found.is_file():
            raise CheckpointError(f"$GRAMCAST_INVERTER={env}: no such file; set it to an inverter bundle "
                                  "(`gramcast-train export-inverter` writes one), or unset it")
        return found
    candidates = [Path(__file__).resolve().parent.parent / "assets" / BUNDLE_NAME]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gramcast"
    candidates.append(cache / BUNDLE_NAME)
    return next((c for c in candidates if c.is_file()), None)


def _bundle_in(path: Path, given: str) -> Path:
    """``path``, or the bundle inside it when it is a folder (CheckpointError if it holds none)."""
    if not path.is_dir():
        return path
    if (path / BUNDLE_NAME).is_file():
        return path / BUNDLE_NAME
    raise CheckpointError(f"{given} is a folder, not an inverter bundle, and holds no {BUNDLE_NAME}: "
                          "pass the bundle file")


# ---------------------------------------------------------------------------------------- enrollment
def _matte_alpha(avatar, matte: np.ndarray, pose: tuple[float, float], threshold: float) -> Tensor:
    """Per texel ``(L, 1, T, T)``: 1 where the texel's point projects inside the matte at the input view."""
    from gramcast.avatar.bake import texel_points

    nl, t = avatar.num_layers, avatar.texture_resolution
    pts = texel_points(avatar.heights, avatar.extent, t).reshape(1, -1, 3)
    s = matte.shape[0]
    uv, _ = camera.project_points(pts, camera.pose_to_c2w(torch.tensor([pose])), s, s)
    m = torch.from_numpy(matte.astype(np.float32))[None, None]
    grid = (uv / s * 2.0 - 1.0).reshape(1, 1, -1, 2)
    inside = torch.nn.functional.grid_sample(m, grid, align_corners=False, padding_mode="zeros")
    return (inside.reshape(nl, 1, t, t) >= threshold).float()


def enroll_graminverter(aligned, matte: np.ndarray | None, weights: "str | Path | Inverter | None" = None,
                        config: InverterConfig = InverterConfig(), device="auto"):
    """``AlignedFace`` (+ its person matte ``(S, S)`` in [0, 1]) -> ``Avatar`` with the learned prior.
    ``weights``: a loaded ``Inverter`` (reused across calls) or a bundle path (see ``require_inverter``)."""
    from gramcast.avatar.bake import bake_model

    inverter = require_inverter(weights, device)
    pose = (float(aligned.pose.yaw), float(aligned.pose.pitch))
    image = _to_model_input(aligned.crop, inverter.resolution)
    mask = None
    if matte is not None and config.refine_steps > 0:
        mask = torch.from_numpy(matte.astype(np.float32))[None, None]
        mask = torch.nn.functional.interpolate(mask, size=image.shape[-2:], mode="area")
    ws, detail, _ = inverter.invert(image, torch.tensor([pose]), mask, config.refine_steps, config.refine_lr)
    g = inverter.generator.config
    avatar = bake_model(inverter.generator, ws, geometry_resolution=config.geometry_resolution,
                        texture_resolution=config.texture_resolution or 2 * g.plane_resolution,
                        extent=inverter.detail.config.extent, detail=detail,
                        model_id=inverter.meta.get("model_id", ""),
                        geometry=inverter.height_grids(config.geometry_resolution, inverter.detail.config.extent))
    textures = avatar.textures.clone()
    if config.drop_background:
        textures[-1, 3] = 0.0
    if matte is not None:
        textures[:, 3:4] *= _matte_alpha(avatar, matte, pose, config.matte_threshold)
    avatar.textures = textures
    input_pose = {"yaw": pose[0], "pitch": pose[1], "roll": float(aligned.pose.roll)}
    # the inversion reproduces the aligned crop itself at the input pose: its render there is the crop
    crop_from_render = {"size": int(aligned.crop.shape[0]), "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]}
    avatar.meta.update({"method": "graminverter", "input_pose": input_pose, "crop_from_render": crop_from_render,
                        "inverter": {**{k: inverter.meta.get(k) for k in ("created", "runs", "bundle", "lineage")
                                        if k in inverter.meta},
                                     "refine_steps": int(config.refine_steps)}})
    return avatar
