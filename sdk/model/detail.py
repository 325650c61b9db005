"""The detail manifolds reconstructor of GRAMInverter (paper Sec. 3.3, supp. A.2).

    image Î, coarse render I_w, input pose θ̂, the manifolds' low-res height grid
      --E_detail--> camera-space feature voxel V (B, d_V, D_lr, H_lr, W_lr)
      --V at low-res points of every manifold (world2cam with θ̂, trilinear)--> F_lr (B, L, d_V, G, G)
      --U (super-resolution, shared by the manifolds)--> detail maps F_hr (B, L, C, 4G, 4G)

A detail map is a feature map over the avatar cache's orthographic (x, y) square ``[-extent, extent]²``
(``grid_xy``'s nodes; row 0 is y = +extent): the hit of a ray on manifold l at world (x, y, z) gets
``detail[:, l]`` sampled at (x, y) added to its tri-plane feature before the decoder
(``GRAMModel.render(..., detail=maps)``), and baking adds the same sum to the cached textures.

The voxel lives in the input camera's frustum (paper Fig. 3): its W and H axes follow the image's
columns and rows out to the outermost rays, its D axis the depth along the viewing axis from
``camera.RAY_NEAR`` (index 0) to ``camera.RAY_FAR``; image-aligned features are easier for a 2D/3D CNN
to produce than world-space ones (paper Sec. 4.3). The last conv of U starts at zero, so an untrained
reconstructor adds nothing and the renders are exactly the coarse ones.

Only torch and numpy (and safetensors for files) are needed here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gramcast import camera
from gramcast.model.checkpoint import CheckpointFormat, config_from_dict, load_checkpoint, save_checkpoint
from gramcast.model.gram import DEFAULT_DETAIL_EXTENT
from gramcast.model.intersection import intersect_levels

__all__ = ["DetailConfig", "DetailReconstructor", "grid_xy", "manifold_height_grid", "frustum_coordinates",
           "sample_voxel", "DEFAULT_DETAIL_EXTENT", "FORMAT_VERSION", "KIND"]

FORMAT_VERSION = 1
KIND = "gramcast.detail-reconstructor"
DETAIL_FORMAT = CheckpointFormat(
    KIND, FORMAT_VERSION, name="detail", what="gramcast detail reconstructor",
    missing="detail reconstructor file; train one with `gramcast-train detail` or check the path",
    pass_instead="pass the detail run's detail.safetensors")


# ---------------------------------------------------------------------------------------- geometry
def grid_xy(resolution: int, extent: float, device=None, dtype=torch.float32) -> Tensor:
    """World (x, y) of a grid's nodes ``(G, G, 2)``; row 0 is y = +extent, column 0 is x = -extent."""
    lin = torch.linspace(-extent, extent, resolution, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(-lin, lin, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


@torch.no_grad()
def manifold_height_grid(model, resolution: int, extent: float = DEFAULT_DETAIL_EXTENT,
                         samples: int = 192) -> tuple[Tensor, Tensor]:
    """The model's manifolds as height fields over ``grid_xy(resolution, extent)``.

    Orthographic rays along -z from above the scene box find each iso-surface's first crossing (the
    side the cameras see). Returns heights ``(L, G, G)`` (L = iso-surfaces + the background plane,
    which is flat at ``background_z``) and valid ``(L, G, G)`` (False where a manifold misses the
    column: its height is then parked behind the background). Identity-independent.
    """
    device = model.device
    xy = grid_xy(resolution, extent, device)
    top, bottom = camera.SCENE_HALF_EXTENT + 0.1, camera.BACKGROUND_Z - 0.05
    origins = torch.cat([xy, torch.full_like(xy[..., :1], top)], -1)[None]            # (1, G, G, 3)
    dirs = torch.zeros_like(origins)
    dirs[..., 2] = -1.0
    pts, _, valid = intersect_levels(model.manifold, origins, dirs, model.manifold.levels,
                                     0.0, top - bottom, samples)
    z = torch.where(valid[0], pts[0, ..., 2], torch.full_like(pts[0, ..., 2], bottom))  # (L-1, G, G)
    bg = torch.full_like(z[:1], model.manifold.background_z)
    return torch.cat([z, bg], 0), torch.cat([valid[0], torch.ones_like(valid[0, :1])], 0)


def frustum_coordinates(points: Tensor, pose, depth_slices: int | None = None,
                        fov_deg: float = camera.FOV_DEG) -> Tensor:
    """world2cam of paper eq. 5: world points ``(B, ..., 3)`` -> the input camera's normalised frustum
    coordinates ``(B, ..., 3)`` in ``grid_sample``'s (x, y, z) order for a voxel (D, H, W).

    x: image column, -1 at the left outermost ray, +1 at the right one; y: image row, -1 at the top
    (+y of the camera); z: depth along the viewing axis, -1 at ``RAY_NEAR``, +1 at ``RAY_FAR``. ±1 are
    the outer edges of the outer voxels (``align_corners=False``). With ``depth_slices`` the depth is
    clamped to the centres of the first and last slices: a point beyond the far plane (the background
    plane seen from the side) takes the far slice's features instead of fading to zero.
    """
    c2w = camera.pose_to_c2w(camera.as_pose_tensor(pose, device=points.device, dtype=points.dtype))
    if c2w.shape[0] != points.shape[0]:
        c2w = c2w.expand(points.shape[0], 4, 4)
    cam = camera.world_to_camera(points, c2w)
    depth = -cam[..., 2]
    half = depth * math.tan(math.radians(fov_deg) / 2.0)
    u = cam[..., 0] / half
    v = -cam[..., 1] / half                 # image rows grow downwards, the camera's y upwards
    w = 2.0 * (depth - camera.RAY_NEAR) / (camera.RAY_FAR - camera.RAY_NEAR) - 1.0
    if depth_slices is not None:
        lim = 1.0 - 1.0 / depth_slices
        w = w.clamp(-lim, lim)
    return torch.stack([u, v, w], -1)


def sample_voxel(voxel: Tensor, points: Tensor, pose) -> Tensor:
    """f_lr of paper eq. 5: trilinear samples of camera-space voxels ``(B, d_V, D, H, W)`` at world
    points ``(B, M, 3)`` seen from ``pose`` -> ``(B, d_V, M)``; zero outside the frustum's sides."""
    b, dv = voxel.shape[:2]
    coords = frustum_coordinates(points, pose, depth_slices=voxel.shape[2]).to(voxel.dtype)
    out = F.grid_sample(voxel, coords.reshape(b, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=False)                                          # (B, d_V, 1, 1, M)
    return out.reshape(b, dv, -1)


# ---------------------------------------------------------------------------------------- config
@dataclass
class DetailConfig:
    #: C: channels of the detail maps = the generator's ``plane_channels`` (they add to its features).
    plane_channels: int = 16
    #: L: manifolds including the background plane = the generator's ``num_manifolds``.
    num_manifolds: int = 24
    #: Side of the input image (the generator's ``resolution``).
    image_resolution: int = 64
    #: 2D encoder: ``down_blocks`` stride-2 blocks, widths doubling from ``encoder_channels`` up to
    #: ``encoder_channels_max``; H_lr = W_lr = image_resolution / 2**down_blocks.
    encoder_channels: int = 32
    encoder_channels_max: int = 128
    down_blocks: int = 2
    #: d_V and D_lr of the camera-space voxel.
    voxel_channels: int = 16
    voxel_depth: int = 16
    #: 3D U-Net: ``unet_levels`` stride-2 levels from ``unet_channels`` (doubling), then ``res_blocks``
    #: 3D residual blocks.
    unet_levels: int = 2
    unet_channels: int = 32
    res_blocks: int = 2
    #: G: side of the low-res grid sampled on every manifold; the detail maps are 4G x 4G.
    map_resolution: int = 16
    #: Width of the super-resolution module U.
    sr_channels: int = 64
    #: Half-side of the maps' (x, y) square (world units); GRAMInverter enrollment bakes over this square.
    extent: float = DEFAULT_DETAIL_EXTENT

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming every field that cannot work."""
        problems = []
        for name in ("plane_channels", "image_resolution", "encoder_channels", "encoder_channels_max",
                     "voxel_channels", "voxel_depth", "unet_channels", "map_resolution", "sr_channels"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("down_blocks", "unet_levels", "res_blocks"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                problems.append(f"{name} must be an integer >= 0, got {v!r}")
        if not isinstance(self.num_manifolds, int) or self.num_manifolds < 2:
            problems.append(f"num_manifolds must be >= 2 (>= 1 level + background), got {self.num_manifolds!r}")
        if not problems:
            lr = self.image_resolution // 2 ** self.down_blocks
            step = 2 ** self.unet_levels
            if self.image_resolution % 2 ** self.down_blocks:
                problems.append(f"image_resolution {self.image_resolution} is not divisible by 2**down_blocks")
            elif lr % step or self.voxel_depth % step:
                problems.append(f"the voxel ({self.voxel_depth} x {lr} x {lr}) must be divisible by "
                                f"2**unet_levels = {step} on every axis")
        if not isinstance(self.extent, (int, float)) or not self.extent > 0:
            problems.append(f"extent must be > 0, got {self.extent!r}")
        if problems:
            raise ValueError("bad detail config: " + "; ".join(problems))

    @property
    def voxel_resolution(self) -> int:
        """H_lr = W_lr."""
        return self.image_resolution // 2 ** self.down_blocks

    @property
    def output_resolution(self) -> int:
        """Side of the detail maps (4G: two x2 upsampling blocks)."""
        return 4 * self.map_resolution

    PRESETS = {
        # trains on 2 CPU cores in tests
        "tiny": dict(encoder_channels=16, encoder_channels_max=64, down_blocks=2, voxel_channels=8,
                     voxel_depth=16, unet_levels=2, unet_channels=16, res_blocks=1, map_resolution=16,
                     sr_channels=32),
        # the "small" generator (128²) on one GPU
        "small": dict(encoder_channels=32, encoder_channels_max=128, down_blocks=3, voxel_channels=16,
                      voxel_depth=16, unet_levels=2, unet_channels=32, res_blocks=2, map_resolution=32,
                      sr_channels=32),
        # the paper's sizes for 256² inputs: a 32³ voxel, 256² detail maps
        "paper": dict(encoder_channels=64, encoder_channels_max=256, down_blocks=3, voxel_channels=32,
                      voxel_depth=32, unet_levels=3, unet_channels=32, res_blocks=2, map_resolution=64,
                      sr_channels=64),
    }

    @classmethod
    def preset(cls, name: str, **overrides) -> "DetailConfig":
        if name not in cls.PRESETS:
            raise ValueError(f"unknown detail preset {name!r}; choose from {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    @classmethod
    def for_model(cls, gram_config, preset: str = "tiny", **overrides) -> "DetailConfig":
        """A preset sized for a generator (its channels, manifolds and image side). If the image side
        does not divide by the preset's downsampling, fewer downsampling blocks are used."""
        base = {**cls.PRESETS.get(preset, {}), "plane_channels": gram_config.plane_channels,
                "num_manifolds": gram_config.num_manifolds, "image_resolution": gram_config.resolution}
        if preset not in cls.PRESETS:
            raise ValueError(f"unknown detail preset {preset!r}; choose from {sorted(cls.PRESETS)}")
        base.update(overrides)
        step = 2 ** base["unet_levels"]
        while base["down_blocks"] > 0 and (base["image_resolution"] % 2 ** base["down_blocks"]
                                           or (base["image_resolution"] // 2 ** base["down_blocks"]) % step):
            base["down_blocks"] -= 1
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DetailConfig":
        """Inverse of ``to_dict``; ValueError on unknown fields or values that cannot work."""
        return config_from_dict(cls, d, "detail")


# ---------------------------------------------------------------------------------------- networks
def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


class _Down2d(nn.Module):
    """(B, cin, H, W) -> (B, cout, H/2, W/2): a stride-2 3x3 conv and a 3x3 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.conv(_act(self.down(x))))


class _Block3d(nn.Module):
    """Two 3x3x3 convs (cin -> cout -> cout)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return _act(self.conv2(_act(self.conv1(x))))


class _ResBlock3d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c, c, 3, padding=1)
        self.conv2 = nn.Conv3d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # 1/sqrt(2) keeps the activations' scale through a stack of blocks
        return (x + self.conv2(_act(self.conv1(x)))) * (1.0 / math.sqrt(2.0))


class DetailEncoder(nn.Module):
    """E_detail: Î ⊕ (Î - I_w) ``(B, 6, R, R)`` -> camera-space voxel V ``(B, d_V, D_lr, H_lr, W_lr)``."""

    def __init__(self, cfg: DetailConfig):
        super().__init__()
        self.cfg = cfg
        widths = [min(cfg.encoder_channels * 2 ** i, cfg.encoder_channels_max) for i in range(cfg.down_blocks)]
        self.stem = nn.Conv2d(6, cfg.encoder_channels, 3, padding=1)
        cin = cfg.encoder_channels
        self.down = nn.ModuleList()
        for w in widths:
            self.down.append(_Down2d(cin, w))
            cin = w
        # 2D -> 3D: one conv predicts d_V features for each of the D_lr depth slices of every pixel
        self.to_voxel = nn.Conv2d(cin, cfg.voxel_channels * cfg.voxel_depth, 3, padding=1)
        chans = [cfg.unet_channels * 2 ** i for i in range(cfg.unet_levels + 1)]
        self.enc = nn.ModuleList([_Block3d(cfg.voxel_channels, chans[0])])
        self.pool = nn.ModuleList()
        for i in range(1, len(chans)):
            self.pool.append(nn.Conv3d(chans[i - 1], chans[i - 1], 3, stride=2, padding=1))
            self.enc.append(_Block3d(chans[i - 1], chans[i]))
        self.dec = nn.ModuleList(_Block3d(chans[i] + chans[i - 1], chans[i - 1])
                                 for i in range(len(chans) - 1, 0, -1))
        self.res = nn.ModuleList(_ResBlock3d(chans[0]) for _ in range(cfg.res_blocks))
        self.out = nn.Conv3d(chans[0], cfg.voxel_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.cfg
        x = _act(self.stem(x))
        for block in self.down:
            x = block(x)
        b, _, h, w = x.shape
        v = self.to_voxel(x).reshape(b, cfg.voxel_channels, cfg.voxel_depth, h, w)
        skips = [self.enc[0](_act(v))]
        for pool, enc in zip(self.pool, self.enc[1:]):
            skips.append(enc(pool(skips[-1])))
        y = skips.pop()
        for dec in self.dec:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
            y = dec(torch.cat([y, skip], 1))
        for block in self.res:
            y = block(y)
        return self.out(y)


class SuperResolution(nn.Module):
    """U: F_lr ``(N, d_V, G, G)`` -> F_hr ``(N, C, 4G, 4G)``: two blocks of (bilinear x2, two 3x3 convs)
    (supp. A.2: 4 convs, 2 upsamplings); the last conv is the output projection, zero at start."""

    def __init__(self, cin: int, width: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, cout, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def _up(x: Tensor) -> Tensor:
        # align_corners=True: the maps are node grids (edge nodes on the square's edges), as the bake's
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: Tensor) -> Tensor:
        x = _act(self.conv2(_act(self.conv1(self._up(x)))))
        return self.out(_act(self.conv3(self._up(x))))


class DetailReconstructor(nn.Module):
    """E_detail + U: ``forward(image, coarse, pose, heights_lr) -> detail maps (B, L, C, 4G, 4G)``."""

    def __init__(self, config: DetailConfig):
        super().__init__()
        self.config = config
        self.encoder = DetailEncoder(config)
        self.upsampler = SuperResolution(config.voxel_channels, config.sr_channels, config.plane_channels)

    @classmethod
    def from_config(cls, config: DetailConfig | str, gram_config=None) -> "DetailReconstructor":
        """From a config, or a preset name sized for ``gram_config`` (required with a name)."""
        if isinstance(config, str):
            if gram_config is None:
                raise ValueError("a preset name needs the generator's config (DetailConfig.for_model)")
            config = DetailConfig.for_model(gram_config, config)
        return cls(config)

    def encode(self, image: Tensor, coarse: Tensor) -> Tensor:
        """Î, I_w ``(B, 3, R, R)`` in [-1, 1] -> V ``(B, d_V, D_lr, H_lr, W_lr)``."""
        r = self.config.image_resolution
        if image.shape[-2:] != (r, r) or coarse.shape != image.shape:
            raise ValueError(f"the reconstructor takes images and coarse renders (B, 3, {r}, {r}), got "
                             f"{tuple(image.shape)} and {tuple(coarse.shape)}")
        return self.encoder(torch.cat([image, image - coarse], 1))

    def low_res_maps(self, voxel: Tensor, pose, heights_lr: Tensor) -> Tensor:
        """F_lr ``(B, L, d_V, G, G)``: V sampled at the nodes (x, y, z_l(x, y)) of every manifold's
        low-res grid, seen from the input ``pose``. heights_lr: ``(L, G, G)`` or ``(B, L, G, G)``
        (``manifold_height_grid(model, G, extent)[0]``; where a manifold misses a column its parked
        height gives it the far slice's features, which no visible texel uses)."""
        b = voxel.shape[0]
        heights = heights_lr.to(voxel.dtype)
        if heights.ndim == 3:
            heights = heights[None]
        nl, g = heights.shape[1], heights.shape[-1]
        if nl != self.config.num_manifolds or g != self.config.map_resolution:
            raise ValueError(f"height grid {tuple(heights_lr.shape)} does not fit this reconstructor "
                             f"({self.config.num_manifolds} manifolds, grid {self.config.map_resolution})")
        xy = grid_xy(g, self.config.extent, voxel.device, voxel.dtype)
        points = torch.cat([xy.expand(heights.shape[0], nl, g, g, 2), heights[..., None]], -1)
        points = points.expand(b, nl, g, g, 3).reshape(b, -1, 3)
        poses = camera.as_pose_tensor(pose, device=voxel.device, dtype=voxel.dtype).expand(b, 2)
        return sample_voxel(voxel, points, poses).reshape(b, -1, nl, g, g).transpose(1, 2)

    def forward(self, image: Tensor, coarse: Tensor, pose, heights_lr: Tensor) -> Tensor:
        """image Î and coarse render I_w ``(B, 3, R, R)`` in [-1, 1] at the input ``pose`` (``(B, 2)``
        or one pose), heights_lr ``(L, G, G)`` -> detail maps ``(B, L, C, 4G, 4G)``."""
        f_lr = self.low_res_maps(self.encode(image, coarse), pose, heights_lr)
        b, nl = f_lr.shape[:2]
        return self.upsampler(f_lr.flatten(0, 1)).unflatten(0, (b, nl))

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path) -> str:
        """Write a safetensors file atomically (temp file + rename); returns the content hash."""
        return save_checkpoint(self, path, DETAIL_FORMAT)

    @classmethod
    def load(cls, path: str | Path, device="auto") -> "DetailReconstructor":
        """Read and validate a file written by ``save``; CheckpointError says what is wrong."""
        return load_checkpoint(path, DETAIL_FORMAT, lambda config: cls(DetailConfig.from_dict(config)), device)
