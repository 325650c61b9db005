"""``gramcast sample``: random people from a GAN prior, each seen from several sides."""
from __future__ import annotations

from gramcast.cli.options import output_file

ANIMATIONS = (".gif", ".mp4", ".webm")
#: Frames of a turntable: all of them are rendered at once, for every identity, before any is written.
MAX_FRAMES = 360


def register(sub) -> None:
    p = sub.add_parser(
        "sample", help="render random identities of a 3D GAN prior (a grid of yaws, or a turntable)",
        description="Draw random identities from a generator (the prior that ships with gramcast by "
                    "default) and render each from several sides: an image (.png, .jpg, .webp) holds one row "
                    "per identity and one column per yaw; an animation (.gif, .mp4, .webm) turns them "
                    "side by side. A quick look at what a prior learned and how 3D-consistent it is.")
    p.add_argument("-o", "--out", type=output_file, required=True,
                   help="image (.png, .jpg, .jpeg, .webp) or animation (.gif, .mp4, .webm) to write")
    p.add_argument("--prior", default="bundled:tiny",
                   help="generator checkpoint, or bundled:NAME for one that ships (default bundled:tiny)")
    p.add_argument("-n", "--num", type=int, default=4, help="identities (default 4)")
    p.add_argument("--seed", type=int, default=0, help="which identities (default 0)")
    p.add_argument("--truncation", type=float, default=0.7,
                   help="1: the prior's full variety; lower: closer to the average face (default 0.7)")
    p.add_argument("--yaws", default="-0.4,-0.2,0,0.2,0.4", help="yaw of each column, radians (images), e.g. --yaws=-0.4,0,0.4")
    p.add_argument("--pitch", type=float, default=0.0, help="pitch of every column, radians (images)")
    p.add_argument("--frames", type=int, default=36,
                   help=f"frames of an animation, 2 to {MAX_FRAMES} (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.set_defaults(func=run_sample)


def _parse_yaws(text: str) -> list[float]:
    from gramcast.errors import GramcastError

    try:
        yaws = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        yaws = []
    if not yaws:
        raise GramcastError(f"--yaws {text!r}: give comma-separated radians, e.g. -0.4,0,0.4")
    return yaws


def tile(frames) -> "np.ndarray":  # noqa: F821
    """``(rows, cols, 3, R, R)`` in [-1, 1] -> one ``(rows·R, cols·R, 3)`` uint8 image."""
    from gramcast.media_io import to_uint8

    rows, cols, _, r, _ = frames.shape
    return to_uint8(frames.permute(2, 0, 3, 1, 4).reshape(3, rows * r, cols * r))


def run_sample(args) -> int:
    from gramcast.cli.avatar_cmd import check_angles, orbit_poses
    from gramcast.cli.options import IMAGE_SUFFIXES, check_frames, counted
    from gramcast.device import device_option
    from gramcast.errors import GramcastError
    from gramcast.media_io import check_output_path, save_animation, save_image
    from gramcast.model import GRAMModel
    from gramcast.model.prior import render_identities

    suffix = args.out.suffix.lower()
    if suffix not in IMAGE_SUFFIXES + ANIMATIONS:
        raise GramcastError(f"cannot write {args.out}: use .png, .jpg or .webp for a grid, .gif, .mp4 or .webm "
                            "for a turntable")
    if not 1 <= args.num <= 64:
        raise GramcastError(f"--num {args.num}: give 1 to 64 identities")
    if not 0.0 <= args.truncation <= 1.0:
        raise GramcastError(f"--truncation {args.truncation}: give a value in [0, 1]")
    if suffix in ANIMATIONS:
        check_frames("--frames", args.frames, least=2, most=MAX_FRAMES)
    yaws = _parse_yaws(args.yaws)
    for yaw in yaws:
        check_angles(yaws=yaw)
    check_angles(pitch=args.pitch)
    check_output_path(args.out)
    model = GRAMModel.load(args.prior, device=device_option(args.device)).eval()
    if suffix in ANIMATIONS:
        poses = orbit_poses(args.frames, 0.5, 0.15)
        frames = render_identities(model, args.num, poses, args.seed, args.truncation)   # (P, N, 3, R, R)
        written = save_animation(args.out, (tile(f[None]) for f in frames), fps=12.0)
        print(f"wrote {args.out} ({counted(args.num, 'identity', 'identities')}, {counted(written, 'frame')})")
    else:
        poses = [(yaw, args.pitch) for yaw in yaws]
        frames = render_identities(model, args.num, poses, args.seed, args.truncation)
        save_image(args.out, tile(frames.transpose(0, 1)))
        print(f"wrote {args.out} ({counted(args.num, 'identity', 'identities')} x {counted(len(poses), 'yaw')})")
    return 0
