"""``gramcast enroll | info | render | orbit``: avatars from the command line."""
from __future__ import annotations

import argparse

import json
import math
from pathlib import Path

from gramcast.cli.options import MAX_FRAMES, output_file


def _yaw_or_none(text: str):
    """--max-yaw's value: radians, or 'none' (no limit)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give an angle in radians or 'none', not {text!r}") from None


def register(sub) -> None:
    e = sub.add_parser("enroll", help="enroll an avatar (.gca) from one portrait",
                       description="Align the face in IMAGE, estimate its pose, cut out the person and bake "
                                   "an avatar file. Exactly one face must be visible (at least 40 px between "
                                   "the eyes), turned at most --max-yaw from the camera.")
    e.add_argument("image", help="portrait photo (JPEG, PNG, WebP, ...)")
    e.add_argument("-o", "--out", type=output_file, required=True, help="avatar file to write (.gca)")
    e.add_argument("--method", default="mesh", choices=("mesh", "graminverter"),
                   help="mesh: prior-free baseline (default); graminverter: the learned method (needs trained weights)")
    e.add_argument("--weights", type=Path, default=None,
                   help="GRAMInverter bundle for --method graminverter (default: $GRAMCAST_INVERTER, the packaged "
                        "one, or ~/.cache/gramcast/graminverter.safetensors)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda (graminverter only)")
    e.add_argument("--refine-steps", type=int, default=0,
                   help="graminverter only: refine the encoder's latent code against the photo for N steps "
                        "before the detail stage (slower, closer to the photo; default 0)")
    e.add_argument("--face", default="only", choices=("only", "largest", "center"),
                   help="which face where the photo shows several of similar size: only (refuse the photo, "
                        "the default), largest, or center (the one nearest the middle)")
    e.add_argument("--crop-size", type=int, default=512, choices=(256, 512), help="aligned crop size (default 512)")
    e.add_argument("--max-yaw", type=_yaw_or_none, default=None, metavar="RAD",
                   help="most head yaw accepted in the photo, radians (default 0.45, ~26 deg: the side turned "
                        "away is guessed, and from photos turned further the guess shows when the avatar turns); "
                        "'none': no limit")
    e.set_defaults(func=run_enroll)

    i = sub.add_parser("info", help="describe an avatar file", description="Print the metadata of a .gca file.")
    i.add_argument("avatar", type=Path)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)

    r = sub.add_parser("render", help="render an avatar at one head pose",
                       description="Render AVATAR at yaw/pitch (radians; yaw > 0 turns the camera to the "
                                   "avatar's left, so the nose moves to the image left).")
    r.add_argument("avatar", type=Path)
    r.add_argument("--yaw", type=float, default=0.0, help="radians (default %(default)s)")
    r.add_argument("--pitch", type=float, default=0.0, help="radians, > 0 looks from above (default %(default)s)")
    r.add_argument("--size", type=int, default=512, help="width and height in pixels (default %(default)s)")
    r.add_argument("--background", default="white",
                   help="white (the default), black, grey (or gray), green, a hex colour like #204060, or "
                        "'none' for a transparent image (.png, .webp)")
    r.add_argument("-o", "--out", type=output_file, required=True,
                   help="image to write: .png, .jpg, .jpeg or .webp (a name without a suffix gets PNG)")
    r.set_defaults(func=run_render)

    o = sub.add_parser("orbit", help="render a turntable animation of an avatar",
                       description="Turn the camera around AVATAR and write a GIF, MP4 or WebM.")
    o.add_argument("avatar", type=Path)
    o.add_argument("-o", "--out", type=output_file, required=True, help="animation to write (.gif, .mp4, .webm)")
    o.add_argument("--frames", type=int, default=48,
                   help=f"frames of one turn, 1 to {MAX_FRAMES} (default %(default)s)")
    o.add_argument("--size", type=int, default=256,
                   help="width and height in pixels (default %(default)s; even for .mp4 and .webm)")
    o.add_argument("--yaw", type=float, default=0.5, help="largest yaw (radians, default 0.5)")
    o.add_argument("--pitch", type=float, default=0.15, help="largest pitch (radians, default 0.15)")
    o.add_argument("--fps", type=float, default=24.0,
                   help="frames per second, up to 120 (a GIF: up to 50; default %(default)s)")
    o.add_argument("--background", default="white",
                   help="white (the default), black, grey (or gray), green or a hex colour like #204060")
    o.set_defaults(func=run_orbit)


def parse_colour(text: str):
    from gramcast.errors import GramcastError

    named = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128),
             "green": (0, 177, 64)}
    if text.lower() in named:
        return named[text.lower()]
    if text.lower() == "none":
        return None
    t = text.lstrip("#")
    if len(t) == 6:
        try:
            return tuple(int(t[k:k + 2], 16) for k in (0, 2, 4))
        except ValueError:
            pass
    raise GramcastError(f"unknown background {text!r}: use white, black, grey, green, none or #RRGGBB")


def composite_over(rgb, alpha, colour):
    import numpy as np

    if colour is None:
        return np.concatenate([rgb, np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)[..., None]], axis=-1)
    from gramcast.compositing import over

    return over(rgb, alpha, np.broadcast_to(np.asarray(colour, np.uint8), rgb.shape))


def run_enroll(args) -> int:
    import time

    from gramcast.cli.options import print_warnings
    from gramcast.device import device_option
    from gramcast.enrollment import enroll
    from gramcast.errors import GramcastError
    from gramcast.media_io import check_output_path

    device_option(args.device)                # fail before the slow part, not after it
    check_output_path(args.out)
    check_suffix(args.out, ".gca", "an avatar file")
    if args.weights is not None and args.method != "graminverter":
        raise GramcastError("--weights applies to --method graminverter only")
    t0 = time.perf_counter()
    options = {}
    if args.refine_steps:
        if args.method != "graminverter":
            raise GramcastError("--refine-steps applies to --method graminverter only")
        options["refine_steps"] = args.refine_steps
    if args.max_yaw is not None:
        if args.max_yaw != "none" and not args.max_yaw > 0:
            raise GramcastError(f"--max-yaw must be a positive angle in radians (or 'none'), not {args.max_yaw}")
        options["max_yaw"] = None if args.max_yaw == "none" else args.max_yaw
    avatar = enroll(args.image, method=args.method, crop_size=args.crop_size, weights=args.weights,
                    device=args.device, face=args.face, **options)
    avatar.save(args.out)
    print_warnings("enroll", avatar)
    pose = avatar.meta.get("input_pose", {})
    print(f"enrolled {args.image} -> {args.out} ({args.method}, {time.perf_counter() - t0:.1f} s; "
          f"photo pose yaw {math.degrees(pose.get('yaw', 0)):+.1f} deg, pitch {math.degrees(pose.get('pitch', 0)):+.1f} deg)")
    return 0


def run_info(args) -> int:
    from gramcast.avatar import Avatar

    info = Avatar.load(args.avatar).describe()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            if k == "warnings":         # sentences: one line each
                for i, warning in enumerate(v):
                    print(f"{k if i == 0 else '':20s} {warning}")
            else:
                print(f"{k:20s} {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return 0


def check_suffix(path: Path, suffix: str, what: str) -> None:
    """Refuse an output name whose suffix says another format: the data would go out under a false name."""
    from gramcast.errors import OutputPathError

    if path.suffix.lower() != suffix:
        raise OutputPathError(f"cannot write {what} to {path}: give a name ending in {suffix}, "
                              f"e.g. {path.with_suffix(suffix)}")


def check_size(option: str, value: int) -> None:
    """A renderer's output size, checked up front (the renderer's own check comes only at the first frame)."""
    from gramcast.avatar.renderer import check_resolution

    check_resolution(value, option)


def check_angles(**angles: float) -> None:
    """Yaw and pitch options are radians within a quarter turn of the front (the avatar's side of it)."""
    from gramcast.errors import GramcastError

    for name, value in angles.items():
        if not math.isfinite(value):
            raise GramcastError(f"--{name} {value}: give a number of radians")
        if abs(value) > math.pi / 2:
            raise GramcastError(f"--{name} {value}: give radians within ±{math.pi / 2:.2f} (a quarter turn; "
                                f"{value} rad is {math.degrees(value):.0f} deg)")


def run_render(args) -> int:
    from gramcast.avatar import Avatar, Renderer
    from gramcast.cli.options import check_image_name
    from gramcast.errors import OutputPathError
    from gramcast.media_io import check_output_path, image_format, save_image

    colour = parse_colour(args.background)
    check_angles(yaw=args.yaw, pitch=args.pitch)
    check_size("--size", args.size)
    check_image_name(args.out)
    check_output_path(args.out)
    if image_format(args.out) not in ("PNG", "WEBP") and colour is None:
        raise OutputPathError(f"cannot write {args.out}: --background none makes a transparent image, which "
                              f"needs .png or .webp (or give a --background colour)")
    rgb, alpha = Renderer(Avatar.load(args.avatar)).render_rgba((args.yaw, args.pitch), args.size)
    save_image(args.out, composite_over(rgb, alpha, colour))
    print(f"wrote {args.out}")
    return 0


def orbit_poses(frames: int, max_yaw: float, max_pitch: float) -> list[tuple[float, float]]:
    """A figure of eight: yaw swings once, pitch twice. Sampled half a step off the start: a path through
    the front twice puts frames 0 and n/2 at the same pose (all of them, for 2 frames); this way none are."""
    phases = [math.pi * (2 * i + 1) / frames for i in range(frames)]
    return [(max_yaw * math.sin(t), max_pitch * math.sin(2 * t)) for t in phases]


def render_turntable(args, renderer, poses, size: int, colour):
    """The frames of ``poses`` as they are rendered (a generator: the writer encodes each as it comes),
    counted on a progress bar."""
    from gramcast.cli.options import progress

    with progress(args, len(poses), "orbit") as bar:
        for pose in poses:
            yield composite_over(*renderer.render_rgba(pose, size), colour)
            bar.update()


def write_turntable(args, renderer, out: Path, frames: int, size: int, fps: float, colour,
                    max_yaw: float = 0.5, max_pitch: float = 0.15) -> int:
    """Renders and writes the turntable; the number of frames written. The bar is closed before an error
    (or Ctrl-C) leaves, so that its line is not the last."""
    from gramcast.media_io import save_animation

    turntable = render_turntable(args, renderer, orbit_poses(frames, max_yaw, max_pitch), size, colour)
    try:
        return save_animation(out, turntable, fps=fps)
    finally:
        turntable.close()


def run_orbit(args) -> int:
    from gramcast.avatar import Avatar, Renderer
    from gramcast.cli.options import check_frames, counted
    from gramcast.errors import GramcastError
    from gramcast.media_io import check_animation, check_output_path

    colour = parse_colour(args.background)
    if colour is None:   # a GIF's one-bit transparency would fray the hair's soft edge; video has none
        raise GramcastError("--background none: a turntable is written opaque; give a colour (e.g. white, "
                            "#204060), or render frames with `gramcast render --background none -o view.png`")
    check_angles(yaw=args.yaw, pitch=args.pitch)
    check_size("--size", args.size)     # here, or the renderer's refusal lands on the progress bar's line
    check_frames("--frames", args.frames)
    if not 0 < args.fps <= 120:
        raise GramcastError(f"--fps {args.fps}: give a rate above 0 and at most 120 frames per second")
    check_output_path(args.out)
    check_animation(args.out, args.fps, (args.size, args.size))
    renderer = Renderer(Avatar.load(args.avatar))
    written = write_turntable(args, renderer, args.out, args.frames, args.size, args.fps, colour, args.yaw, args.pitch)
    print(f"wrote {args.out} ({counted(written, 'frame')}, {written / args.fps:.4g} s at {args.fps:g} fps)")
    return 0
