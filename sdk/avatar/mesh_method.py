"""Enrollment method ``mesh``: needs no learned prior (the baseline the learned method must beat).

The person's dense face mesh (mediapipe, frontalised into the canonical frame by a similarity fit to
the reference face) gives the surface; a head-shaped proxy (an ellipsoid fitted to the mesh) extends
it smoothly over hair, ears and neck. That surface becomes the avatar's one manifold: every texel
takes the input photo's colour where the input camera sees it, opacity from the person matte.
Texels the photo does not see are filled from their mirror texel (facial symmetry, blended into the seen
side), then by inpainting, so turning the head never opens holes (``gramcast.avatar.texture_fill``).
The person matte around the crop, and the face it must keep, come from ``gramcast.avatar.mesh_photo``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from gramcast import camera
from gramcast.avatar.avatar import Avatar, now_iso
from gramcast.avatar.bake import grid_xy
from gramcast.avatar.head_top import head_cap
from gramcast.avatar.mesh_photo import PhotoContext, face_core, face_in_photo
from gramcast.avatar.renderer import RenderSettings, render_cache
from gramcast.avatar.side_edges import bridged_side_edges
from gramcast.avatar.texture_fill import MIRROR_BLENDS, better_seen_mirrored, fill_unseen
from gramcast.checks import check_options, is_bool, is_real, real_in, whole_in
from gramcast.face.alignment import AlignedFace
from gramcast.face.geometry import apply_affine, similarity_2d, umeyama
from gramcast.face.landmarks import CHIN, five_points
from gramcast.face.matte import disc, foreground_colours, refine_matte
from gramcast.face.quality import BEYOND_LEFT, BEYOND_RIGHT, BEYOND_TOP, INSIDE, UNKNOWN_SIDE
from gramcast.face.reference import ReferenceFace, load_reference, project_world

__all__ = ["MeshConfig", "photo_colours", "enroll_mesh", "world_landmarks", "surface_heights", "facing_cosines",
           "face_floor", "FACE_RIM"]


@dataclass(frozen=True)
class MeshConfig:
    """Grid sizes and extent (world half-side) of the baked surface and texture; visibility test
    tolerances (depth in world units, minimum cosine between the surface normal and the view)."""

    geometry_resolution: int = 128
    texture_resolution: int = 512
    extent: float = 0.14
    depth_tolerance: float = 0.006
    min_facing: float = 0.15
    #: Blur (in texels of a 128² geometry grid) of the surface whose normals decide which texels face the
    #: input camera: the mesh's relief is bumpy along the face's contour, and its spots failed the test
    #: inside a cheek the photo shows, which then took the mirrored (asymmetric) side's colours.
    facing_smoothing: float = 3.0
    #: How much of the photo around the aligned crop (a fraction of its side, on every side) the texture
    #: may take colours from: the grid reaches past the crop (hair, ears); 0 keeps to the crop.
    context_margin: float = 0.2
    #: How the side the photo does not see takes its mirror texels: "poisson" (their detail, at the
    #: brightness of the seen texels around them; ``texture_fill.fill_unseen``) or "copy".
    mirror_blend: str = "poisson"
    #: A texel the photo sees at a grazing angle (cosine below this) takes its mirror texel instead where
    #: the photo sees that one squarely (cosine at least ``mirror_min_facing``): the far side of a turned
    #: face, whose few pixels smear its eye and mouth corner over the cheek. 0 (the default) keeps every
    #: seen texel: at 0.3, 48 LFW photos turned 0.3-0.64 rad kept their ID_nv (+0.012 against 0) but lost
    #: 0.5 dB, 0.008 of identity and 0.009 of LPIPS at the input view.
    prefer_mirror_below: float = 0.0
    mirror_min_facing: float = 0.5
    #: Take the person's own colours under the matte's soft edge (``gramcast.face.matte.foreground_colours``)
    #: rather than the photo's, which mix in the old background: studio photos keyed onto new backgrounds
    #: (bench/matte_edges.py) rendered 1.3 dB closer to the truth in the edge band, 0.9 dB over the crop.
    foreground_colours: bool = True
    #: Solve the matte's soft edge from the photo's colours (``gramcast.face.matte.refine_matte``, closed-form
    #: matting) instead of taking the segmentation's ramp: on the same keyed portraits 1.7 dB closer to the
    #: truth in the edge band, 1.0 dB over the head; ~0.75 s per enrollment on 2 cores.
    refine_matte: bool = True
    #: The person matte where four looks at the photo agree (``gramcast.face.matte.agreed_matte``): the photo,
    #: its mirror image, the aligned crop alone and its mirror; False: the widened crop's one segmentation.
    #: Keyed portraits over photos of crowds rendered 3.7 dB closer to the truth over the crop, over
    #: blurred photos 2.6 dB, over plain backdrops within 0.25 dB (bench/matte_edges.py); 0.03 s more per
    #: enrollment (three more segmentations, less edge left for refine_matte to solve).
    agreed_matte: bool = True
    #: With ``agreed_matte``: one more look, at the crop widened by this fraction of its side on every side,
    #: so that the ring around the aligned crop (hair, ears, shoulders; what turned views show beside the
    #: head) has the widened crop's looks checked by another, as the aligned crop's looks check the crop.
    #: Keyed portraits: the matte's junk in that ring fell from 4.6 to 3.2 % of the crop's area over crowds,
    #: 2.9 to 1.7 % over blurred photos (bench/matte_edges.py); 0.18 s more per enrollment (bench/enroll.py).
    #: Nothing more where it is not above ``context_margin``.
    matte_look_margin: float = 0.35
    #: Where the matte's looks disagree over this fraction of the person's area or more (a busy
    #: background), also cut what the photo's colours call background, the head spared
    #: (``gramcast.face.matte.colour_cut``: GrabCut seeded by the matte; ``subject_matte``); ``inf``: never,
    #: 0: always. Keyed portraits (bench/matte_edges.py, 31 x 4 backgrounds): around the crop, what turned
    #: views show beside the head, +3.7 dB over crowds and +2.1 dB over blurred photos, the matte's error
    #: 8.1 -> 5.8 and 7.0 -> 5.8 % of the crop; over the crop +0.59 and +0.14 dB (worst pair -0.64 dB).
    #: Plain walls are left alone but for 2 of 62 photos: always on, it took white shirts for the white
    #: wall behind them (matte error 3.4 -> 5.5 %). Where it runs, an enrollment takes 0.14 s more (a crowd
    #: composite on 2 cores: 2.43 -> 2.57 s, medians of 3; the cut alone 0.28 s, the matting then has less to solve).
    colour_cut_from: float = 0.1

    def __post_init__(self) -> None:
        check_options(self, _MESH_RULES, "the mesh method's")


# What each option takes. Sizes within the avatar limits a server takes (``gramcast.avatar.AvatarLimits``)
# and from 16 up (smaller grids cannot hold a face's relief). The extent must hold the head (the reference
# face reaches 0.083 from the centre) and the camera sees no further than ~0.15 (12 deg field of view at
# radius 1); margins beyond the crop's own side reach past any such grid (0.14 reaches 0.17 of the crop's
# side beyond it) and only cost time (a margin of 5: 173 s).
_COSINE = "a cosine from 0 to 1"
_MESH_RULES = {
    "geometry_resolution": (whole_in(16, 512), "a whole number of grid cells from 16 to 512", int),
    "texture_resolution": (whole_in(16, 1024), "a whole number of texels from 16 to 1024", int),
    "extent": (real_in(0.1, 0.3), "a number of world units from 0.1 to 0.3 (the grid's half side)", float),
    "depth_tolerance": (real_in(0.0, 0.1), "a number of world units from 0 to 0.1", float),
    "min_facing": (real_in(0.0, 1.0), _COSINE, float),
    "facing_smoothing": (real_in(0.0, 16.0), "a number of texels from 0 to 16", float),
    "context_margin": (real_in(0.0, 1.0), "a fraction of the crop's side from 0 to 1", float),
    "mirror_blend": (lambda v: isinstance(v, str) and v in MIRROR_BLENDS, " or ".join(map(repr, MIRROR_BLENDS)),
                     None),
    "prefer_mirror_below": (real_in(0.0, 1.0), _COSINE, float),
    "mirror_min_facing": (real_in(0.0, 1.0), _COSINE, float),
    "foreground_colours": (is_bool, "True or False", bool),
    "refine_matte": (is_bool, "True or False", bool),
    "agreed_matte": (is_bool, "True or False", bool),
    "matte_look_margin": (real_in(0.0, 1.0), "a fraction of the crop's side from 0 to 1", float),
    "colour_cut_from": (lambda v: is_real(v) and v >= 0,
                        "a fraction of the person's area, 0 or more (inf: never)", float),
}


def world_landmarks(aligned: AlignedFace, ref: ReferenceFace) -> np.ndarray:
    """The person's landmarks ``(468, 3)`` in world units, frontalised (head rotation removed)."""
    s, r, t, _ = umeyama(aligned.landmarks, ref.points)
    return s * aligned.landmarks @ r.T + t


def _grid_index(xy: np.ndarray, g: int, extent: float) -> np.ndarray:
    """World (x, y) -> continuous grid (column, row)."""
    col = (xy[:, 0] + extent) / (2 * extent) * (g - 1)
    row = (extent - xy[:, 1]) / (2 * extent) * (g - 1)
    return np.stack([col, row], axis=1)


def surface_heights(points: np.ndarray, g: int, extent: float) -> np.ndarray:
    """Height field ``(G, G)`` of a head: ellipsoid proxy + the mesh's own relief inside the face."""
    xy = grid_xy(g, extent).numpy().astype(np.float64)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    rx = 1.2 * np.abs(x).max()
    yc = 0.5 * (y.min() + y.max()) + 0.25 * (y.max() - y.min())      # the skull reaches above the brow
    ry = (yc - y.min()) * 1.08

    def bulge(px, py):
        return np.sqrt(np.clip(1.0 - (px / rx) ** 2 - ((py - yc) / ry) ** 2, 0.0, None))

    a = np.stack([np.ones_like(x), bulge(x, y)], axis=1)
    (zc, rz), *_ = np.linalg.lstsq(a, z, rcond=None)
    rz = max(rz, 0.02)
    proxy = zc + rz * bulge(xy[..., 0], xy[..., 1])
    # the neck: a vertical half-cylinder under the jaw, so turning does not show a cliff at the chin
    neck_rx = 0.62 * rx
    neck = zc + 0.55 * rz * np.sqrt(np.clip(1.0 - (xy[..., 0] / neck_rx) ** 2, 0.0, None))
    proxy = np.where(xy[..., 1] < yc, np.maximum(proxy, neck), proxy)
    # the face's relief: residuals splatted on the grid and spread by normalised convolution
    resid = z - (zc + rz * bulge(x, y))
    idx = np.rint(_grid_index(points[:, :2], g, extent)).astype(int).clip(0, g - 1)
    num, den = np.zeros((g, g)), np.zeros((g, g))
    np.add.at(num, (idx[:, 1], idx[:, 0]), resid)
    np.add.at(den, (idx[:, 1], idx[:, 0]), 1.0)
    sigma = 1.5 * g / 128
    relief = cv2.GaussianBlur(num, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(den, (0, 0), sigma), 1e-9)
    wide = cv2.GaussianBlur(num, (0, 0), 4 * sigma) / np.maximum(cv2.GaussianBlur(den, (0, 0), 4 * sigma), 1e-9)
    covered = cv2.GaussianBlur(den, (0, 0), sigma) > 1e-3
    relief = np.where(covered, relief, wide)
    hull = _hull_in_grid(points, g, extent)
    outside = cv2.distanceTransform((1 - hull).astype(np.uint8), cv2.DIST_L2, 5)
    fade = np.exp(-((outside / (6 * g / 128)) ** 2))
    h = proxy + fade * relief
    h = cv2.GaussianBlur(h, (0, 0), 0.75 * g / 128)
    return np.clip(h, camera.BACKGROUND_Z + 0.01, camera.SCENE_HALF_EXTENT - 0.005).astype(np.float32)


def facing_cosines(heights: np.ndarray, extent: float, world: np.ndarray, cam: np.ndarray, t: int,
                   smoothing: float = 0.0) -> np.ndarray:
    """Cosine ``(T*T,)`` between each texel's surface normal and its direction to the camera ``cam`` ``(3,)``;
    ``world`` ``(T*T, 3)``: the texels on the surface ``heights`` ``(G, G)``. ``smoothing``: Gaussian sigma
    (texels of a 128² grid) applied to the heights first, so that the test sees the surface's shape, not
    its bumps."""
    sigma = smoothing * heights.shape[0] / 128
    h = cv2.GaussianBlur(heights, (0, 0), sigma) if sigma > 0 else heights
    normals = cv2.resize(_normals(h, extent), (t, t), interpolation=cv2.INTER_LINEAR).reshape(-1, 3)
    to_cam = cam - world
    return (normals * to_cam).sum(1) / np.linalg.norm(to_cam, axis=1) / np.linalg.norm(normals, axis=1)


def _normals(h: np.ndarray, extent: float) -> np.ndarray:
    """Unit normals ``(G, G, 3)`` of a height field (towards +z)."""
    step = 2 * extent / (h.shape[0] - 1)
    dz_dx = np.gradient(h, step, axis=1)
    dz_dy = -np.gradient(h, step, axis=0)          # rows run towards -y
    n = np.stack([-dz_dx, -dz_dy, np.ones_like(h)], axis=-1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


# How far beyond the face's landmark hull in the texture (a fraction of its side) the face's rim may reach:
# of 30 LFW people, the texels beside the hull that fall inside it in the photo lay within 4.5 % of it (99th
# percentile, each person; one reached 6.5 %, an ear beside a turned jaw); the flat surround lies farther out.
FACE_RIM = 0.05


def face_floor(face: np.ndarray, in_face: np.ndarray, rim: int) -> np.ndarray:
    """The least opacity of a texture's texels ``(T, T)`` float32: 1 over the face's landmark hull in the
    texture (``face`` ``(T, T)`` bool), and within ``rim`` texels of it, ``in_face`` ``(T, T)`` in [0, 1]:
    how much of each texel falls inside the landmarks' hull in the photo."""
    beside = cv2.dilate(face.astype(np.uint8), disc(rim)) > 0
    return np.maximum(np.where(beside, in_face, 0.0), face).astype(np.float32)


def photo_colours(photo: np.ndarray, matte: np.ndarray, config: MeshConfig = MeshConfig(),
                  keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What the texture takes from ``photo`` ``(S, S, 3)`` uint8 with its person ``matte`` ``(S, S)``: the
    colours and opacity, the matte's soft edge solved from the photo (``config.refine_matte``) and the person's
    own colours under it (``config.foreground_colours``). ``keep`` ``(S, S)`` in [0, 1]: the least opacity
    the solved matte keeps (the face, ``face_core``)."""
    if config.refine_matte:
        matte = refine_matte(photo, matte)
        if keep is not None:
            # the solution follows the photo's colours: beside the edge of a photo that cuts the face, it took
            # a strip the matte held at 1 down to 0.6-0.9 (a see-through slit down the avatar's face)
            matte = np.maximum(matte, keep)
    if config.foreground_colours:
        photo = foreground_colours(photo, matte)
    return photo, matte


def enroll_mesh(aligned: AlignedFace, matte: np.ndarray, config: MeshConfig = MeshConfig(),
                reference: ReferenceFace | None = None, context: PhotoContext | None = None) -> Avatar:
    """aligned: the aligned crop ``(S, S, 3)`` with its landmarks and pose; matte ``(S, S)`` in [0, 1].
    ``context``: the photo around the crop, so that the head beyond the crop (hair, ears) takes the photo's
    colours where the photo has them instead of being guessed."""
    ref = reference or load_reference()
    g, t, e = config.geometry_resolution, config.texture_resolution, config.extent
    size = aligned.size
    pts = world_landmarks(aligned, ref)
    heights = surface_heights(pts, g, e)
    yaw, pitch = aligned.pose.yaw, aligned.pose.pitch
    # crop pixels of the world seen from the input pose: projection, then the small 2D correction
    crop_px = np.stack([aligned.landmarks[:, 0], -aligned.landmarks[:, 1]], axis=1)
    correction = similarity_2d(project_world(pts, size, yaw, pitch), crop_px)
    # texel positions on the surface
    h_t = cv2.resize(heights, (t, t), interpolation=cv2.INTER_LINEAR)
    txy = grid_xy(t, e).numpy().astype(np.float64)
    world = np.concatenate([txy, h_t[..., None].astype(np.float64)], axis=-1).reshape(-1, 3)
    proj = project_world(world, size, yaw, pitch)                              # (T*T, 2) render pixels
    uv = apply_affine(correction, proj).reshape(t, t, 2).astype(np.float32)
    in_crop = (uv[..., 0] >= 0) & (uv[..., 0] <= size) & (uv[..., 1] >= 0) & (uv[..., 1] <= size)
    src, src_matte, offset = (aligned.crop, matte, 0.0) if context is None else \
        (context.crop, context.matte, context.offset)
    side = src.shape[0]
    photo = src
    person = src_matte
    src, src_matte = photo_colours(src, src_matte, config, keep=face_core(aligned.pixels + offset, src_matte.shape))
    map_x, map_y = uv[..., 0] + (offset - 0.5), uv[..., 1] + (offset - 0.5)

    def sampled(image: np.ndarray) -> np.ndarray:
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def sampled_share(mask: np.ndarray) -> np.ndarray:
        """``mask`` ``(S, S)`` in [0, 1] (a matte) at each texel ``(T, T)`` float32, 0 beyond the crop."""
        return cv2.remap(mask.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    colour = sampled(src)
    alpha = sampled_share(src_matte)
    # visibility from the input camera: in the photo, facing it, and not hidden behind the surface
    in_image = (map_x >= -0.5) & (map_x <= side - 0.5) & (map_y >= -0.5) & (map_y <= side - 0.5)
    if context is not None:
        # beyond which of the photo's edges each texel lies (beyond the context crop: none known, not inside)
        sides = cv2.remap(context.sides, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=UNKNOWN_SIDE)
        in_image &= sides == INSIDE
    seen, cosines = _seen_from(heights, e, world, proj, (yaw, pitch), size, in_crop, config)
    seen &= in_image
    seen &= ~better_seen_mirrored(seen, cosines, config.prefer_mirror_below, config.mirror_min_facing)
    colour, alpha, seen = fill_unseen(colour, alpha, seen, in_image, heights, config.mirror_blend)
    face, eyes, chin_row = _face_in_texture(pts, t, e)
    # The face itself is opaque from every view: its landmarks' hull in the texture, and the texels beside it
    # that fall inside their hull in the photo where the person matte (before its edge is solved from the
    # colours) holds the majority. Near the face's outline the photo sees the surface at a grazing angle, so
    # a pixel or two of matte there spreads over many texels: the matte's soft edge, or a strip of cheek that
    # the solve took away beside a wall of skin's colour, became a see-through band across the cheek once
    # the head turned (LFW's John Warner, beside a sign). The majority, because the hull's own outline can
    # pass the jaw or a temple by a pixel or two (a skin-coloured line beside the jaw); beside the hull only,
    # because the flat surround far behind a turned head can fall inside it in the photo too.
    in_face = sampled_share(face_in_photo(aligned.pixels + offset, person))
    alpha = np.maximum(alpha, face_floor(face, in_face, max(1, round(FACE_RIM * t))))
    if context is not None:
        # a head cut off by the photo's own edges (not the context crop's): beside its sides, beyond its top
        beyond_sides = (sides == BEYOND_LEFT) | (sides == BEYOND_RIGHT)
        if beyond_sides.any():
            colour, alpha = bridged_side_edges(colour, alpha, sampled(photo), in_image, beyond_sides)
        colour, alpha = head_cap(colour, alpha, in_image, sides == BEYOND_TOP, face, eyes[1], chin_row, eyes[0])
    rgb = torch.from_numpy(colour).float().permute(2, 0, 1) / 127.5 - 1.0
    textures = torch.cat([rgb, torch.from_numpy(alpha)[None].float()], 0)[None]
    meta = {"method": "mesh", "model_id": "none (prior-free)", "created": now_iso(),
            "input_pose": {"yaw": yaw, "pitch": pitch, "roll": aligned.pose.roll},
            "crop_size": size, "seen_fraction": float(seen.mean()),
            "crop_from_render": {"size": size, "matrix": np.asarray(correction, np.float64).tolist()}}
    return Avatar(torch.from_numpy(heights)[None], textures, e, meta)


def _hull_in_grid(points: np.ndarray, g: int, extent: float) -> np.ndarray:
    """The convex hull ``(G, G)`` uint8 (0 / 1) of landmarks ``(N, 3)`` (world) on a ``g``² grid."""
    hull = np.zeros((g, g), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.rint(_grid_index(points[:, :2], g, extent)).astype(np.int32)), 1)
    return hull


def _face_in_texture(points: np.ndarray, t: int, extent: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Where the face's landmarks ``(468, 3)`` (world) lie in a ``t``² texture: their convex hull ``(t, t)``
    bool, the eyes' midpoint (column, row) and the chin's row."""
    idx = _grid_index(points[:, :2], t, extent)
    return _hull_in_grid(points, t, extent) > 0, five_points(idx)[:2].mean(0), float(idx[CHIN, 1])


def _seen_from(heights: np.ndarray, extent: float, world: np.ndarray, proj: np.ndarray, pose: tuple[float, float],
               size: int, in_crop: np.ndarray, config: MeshConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which texels the input camera at ``pose`` sees, ``(T, T)`` bool: those whose surface faces it (cosine
    above ``config.min_facing``) and that the surface ``heights`` ``(G, G)`` does not hide; and the cosines
    ``(T, T)``. ``world`` ``(T*T, 3)``: the texels on the surface; ``proj`` ``(T*T, 2)``: where the camera
    sees them in a ``size``² render; ``in_crop`` ``(T, T)``: inside the aligned crop."""
    t = in_crop.shape[0]
    cam = camera.camera_position(torch.tensor([pose[0]]), torch.tensor([pose[1]]))[0].numpy()
    dist = np.linalg.norm(cam - world, axis=1)
    cosines = facing_cosines(heights, extent, world, cam, t, config.facing_smoothing)
    depth_img = _depth_from(heights, extent, pose, size)
    seen_depth = cv2.remap(depth_img, proj[:, 0].reshape(t, t).astype(np.float32) - 0.5,
                           proj[:, 1].reshape(t, t).astype(np.float32) - 0.5, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).reshape(-1)
    # the depth map covers the crop only; beyond it (hair, ears, shoulders of a near-frontal photo) the
    # proxy does not hide itself
    unoccluded = (dist <= seen_depth + config.depth_tolerance) | ~in_crop.reshape(-1)
    return ((cosines > config.min_facing) & unoccluded).reshape(t, t), cosines.reshape(t, t)


def _depth_from(heights: np.ndarray, extent: float, pose, size: int) -> np.ndarray:
    """Distance map ``(S, S)`` of the opaque surface seen from ``pose`` (inf where nothing is hit)."""
    h = torch.from_numpy(heights)[None, None].float()
    tex = torch.ones(1, 4, 2, 2)
    _, alpha, depth = render_cache(h, tex, extent, torch.tensor([pose], dtype=torch.float32), size,
                                   RenderSettings(lowres_factor=2, steps=48, refine=3))
    d = depth[0, 0].numpy()
    return np.where(alpha[0, 0].numpy() > 0.5, d, np.float32(1e3)).astype(np.float32)
