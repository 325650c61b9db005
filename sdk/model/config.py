"""Sizes of the efficient GRAM generator, with presets from a CPU-test toy to the paper's model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from gramcast.checks import is_finite, is_whole
from gramcast.errors import InvalidArgumentError

#: Fields that size tensors or loops: Python integers (a float such as 64.5 or a string from a
#: hand-written JSON file would fail deep inside the network, or build one no file can describe).
_INT_FIELDS = ("resolution", "num_manifolds", "manifold_width", "manifold_depth", "z_dim", "w_dim",
               "mapping_layers", "plane_resolution", "plane_channels", "channel_base", "channel_max",
               "decoder_hidden", "samples_per_ray", "lowres_factor")
_FLOAT_FIELDS = ("level_min", "level_max", "plane_extent")


@dataclass
class GRAMConfig:
    #: Output image side in pixels.
    resolution: int = 64
    #: Radiance manifolds; the last one is the background plane (GRAM's FFHQ setup: 24).
    num_manifolds: int = 24
    #: Range of the N-1 scalar levels of the iso-surfaces. At initialisation s(x) = |x - center|, so
    #: these are radii of concentric shells around ``sphere_center``; with the default centre the
    #: shells' near caps sweep z in [-0.10, 0.12], the depth band the cameras sample.
    level_min: float = 0.40
    level_max: float = 0.62
    sphere_center: tuple[float, float, float] = (0.0, 0.0, -0.5)
    #: Manifold predictor MLP (hidden width and number of hidden layers).
    manifold_width: int = 64
    manifold_depth: int = 3
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    #: Tri-plane side and channels per plane.
    plane_resolution: int = 64
    plane_channels: int = 16
    #: Synthesis channels at resolution r: min(channel_base // r, channel_max) (StyleGAN2 habit).
    channel_base: int = 4096
    channel_max: int = 256
    decoder_hidden: int = 64
    #: Half-extent of the cube the tri-planes cover (world units); wide enough for the background
    #: plane seen at |yaw| <= 0.6.
    plane_extent: float = 0.3
    #: Samples of s(x) per ray when searching for level crossings.
    samples_per_ray: int = 48
    #: Intersections are computed at resolution / lowres_factor and upsampled (paper: 4; 1 = dense).
    lowres_factor: int = 4

    def __post_init__(self) -> None:
        # numpy scalars (from an array of sizes) are numbers but not JSON: keep plain Python ones.
        for name in _INT_FIELDS:
            if is_whole(getattr(self, name)):
                setattr(self, name, int(getattr(self, name)))
        for name in _FLOAT_FIELDS:
            if is_finite(getattr(self, name)):
                setattr(self, name, float(getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise InvalidArgumentError (a ValueError) naming every field that cannot work.

        Runs at construction and again when a model is built from the config (``GRAMModel.__init__``),
        so a preset edited field by field afterwards is checked before it becomes a network whose
        checkpoint could not be loaded back."""
        problems = []
        for name in _INT_FIELDS:
            if not is_whole(getattr(self, name)):
                problems.append(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in _FLOAT_FIELDS:
            if not is_finite(getattr(self, name)):
                problems.append(f"{name} must be a finite number, got {getattr(self, name)!r}")
        try:
            center = tuple(self.sphere_center)
        except TypeError:
            center = None
        if center is None or len(center) != 3 or not all(is_finite(c) for c in center):
            problems.append(f"sphere_center must be 3 finite coordinates, got {self.sphere_center!r}")
        if problems:   # the range checks below compare numbers
            raise InvalidArgumentError("bad GRAM config: " + "; ".join(problems))
        if self.resolution < 2:
            problems.append(f"resolution must be >= 2, got {self.resolution}")
        if self.num_manifolds < 2:
            problems.append(f"num_manifolds must be >= 2 (>= 1 level + background), got {self.num_manifolds}")
        if not self.level_min < self.level_max and self.num_manifolds > 2:
            problems.append(f"level_min ({self.level_min}) must be < level_max ({self.level_max})")
        pr = self.plane_resolution
        if pr < 4 or pr & (pr - 1):
            problems.append(f"plane_resolution must be a power of two >= 4, got {pr}")
        for name in ("manifold_width", "manifold_depth", "z_dim", "w_dim", "mapping_layers",
                     "plane_channels", "channel_base", "channel_max", "decoder_hidden", "lowres_factor"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_ray < 2:
            problems.append(f"samples_per_ray must be >= 2, got {self.samples_per_ray}")
        if self.plane_extent <= 0:
            problems.append(f"plane_extent must be > 0, got {self.plane_extent}")
        if problems:
            raise InvalidArgumentError("bad GRAM config: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str) -> "GRAMConfig":
        presets = {
            # trains on 2 CPU cores in tests
            "tiny": dict(resolution=64, num_manifolds=12, manifold_width=32, manifold_depth=2, z_dim=64,
                         w_dim=64, mapping_layers=2, plane_resolution=32, plane_channels=8,
                         channel_base=512, channel_max=64, decoder_hidden=32, samples_per_ray=32),
            # what one lent GPU trains in about an hour
            "small": dict(resolution=128, num_manifolds=24, z_dim=256, w_dim=256, mapping_layers=4,
                          plane_resolution=128, plane_channels=16, channel_base=8192, channel_max=256,
                          decoder_hidden=64, samples_per_ray=48),
            # the paper's sizes (256², 24 manifolds, 512-d latents, 256² x 32 tri-planes)
            "paper": dict(resolution=256, num_manifolds=24, z_dim=512, w_dim=512, mapping_layers=8,
                          plane_resolution=256, plane_channels=32, channel_base=32768, channel_max=512,
                          decoder_hidden=64, samples_per_ray=64),
        }
        if name not in presets:
            raise InvalidArgumentError(f"unknown GRAM preset {name!r}; choose from {sorted(presets)}")
        return cls(**presets[name])

    def levels(self) -> list[float]:
        """The N-1 iso-levels of the scalar field, evenly spread (the N-th manifold is the background plane)."""
        n = self.num_manifolds - 1
        if n == 1:
            return [self.level_min]
        step = (self.level_max - self.level_min) / (n - 1)
        return [self.level_min + i * step for i in range(n)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sphere_center"] = list(self.sphere_center)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GRAMConfig":
        """Inverse of ``to_dict``; InvalidArgumentError (a ValueError) on unknown fields or values that
        cannot work."""
        if not isinstance(d, dict):
            raise InvalidArgumentError(f"a GRAM config is a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidArgumentError(f"unknown GRAM config fields {unknown}; known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("sphere_center"), (list, tuple)):
            d["sphere_center"] = tuple(d["sphere_center"])
        return cls(**d)
