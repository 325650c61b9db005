"""``gramcast demo``: the quickstart's main job — enroll the bundled sample portrait and render it."""
from __future__ import annotations

from pathlib import Path

SAMPLE_PORTRAIT = Path(__file__).resolve().parents[1] / "assets" / "sample_portrait.png"


def register(sub) -> None:
    p = sub.add_parser("demo", help="enroll the bundled sample portrait and render a turntable",
                       description="Enroll the bundled sample portrait (NASA, public domain) or --image, "
                                   "then write OUT/avatar.gca, OUT/orbit.gif and OUT/frontal.png. "
                                   "`gramcast serve --avatar OUT/avatar.gca` then streams it.")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (created; default: out)")
    p.add_argument("--image", default=str(SAMPLE_PORTRAIT), help="portrait to enroll (default: the bundled sample)")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=int, default=256)
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from gramcast.avatar import Renderer
    from gramcast.cli.avatar_cmd import check_size, composite_over, orbit_poses
    from gramcast.enrollment import enroll
    from gramcast.errors import GramcastError, OutputPathError
    from gramcast.media_io import save_animation, save_image

    # before enrolling and before the progress bar, whose line an error at the first frame would land on
    if args.frames < 1:
        raise GramcastError(f"--frames {args.frames}: give 1 or more")
    check_size("--size", args.size)
    made = not args.out.exists()
    try:   # before enrolling: a folder that cannot be made is found out at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot make the output folder {args.out}: {exc.strerror or exc}; give another --out")
    try:
        avatar = enroll(args.image)
    except BaseException:
        if made and not any(args.out.iterdir()):
            args.out.rmdir()     # a photo that does not enroll leaves nothing behind
        raise
    avatar.save(args.out / "avatar.gca")
    renderer = Renderer(avatar)
    white = (255, 255, 255)
    frames = [composite_over(*renderer.render_rgba(p, args.size), white)
              for p in tqdm(orbit_poses(args.frames, 0.5, 0.15), desc="orbit", unit="frame")]
    save_animation(args.out / "orbit.gif", frames, fps=24)
    save_image(args.out / "frontal.png", composite_over(*renderer.render_rgba((0.0, 0.0), 512), white))
    print(f"enrolled {Path(args.image).name}: {args.out / 'avatar.gca'}, {args.out / 'orbit.gif'}, "
          f"{args.out / 'frontal.png'}")
    print(f"stream it: gramcast serve --avatar {args.out / 'avatar.gca'}")
    return 0
