"""``gramcast demo``: the quickstart's main job — enroll the bundled sample portrait and render it."""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from gramcast.cli.options import MAX_FRAMES

SAMPLE_PORTRAIT = Path(__file__).resolve().parents[1] / "assets" / "sample_portrait.png"
#: What the demo writes into its folder.
OUTPUTS = ("avatar.gca", "orbit.gif", "frontal.png")
FRONTAL_SIZE = 512


def register(sub) -> None:
    p = sub.add_parser("demo", help="enroll the bundled sample portrait and render a turntable",
                       description="Enroll the bundled sample portrait (NASA, public domain) or --image, "
                                   "then write OUT/avatar.gca, OUT/orbit.gif and OUT/frontal.png. "
                                   "`gramcast serve --avatar OUT/avatar.gca` then streams it.")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (created; default: out)")
    p.add_argument("--image", default=str(SAMPLE_PORTRAIT), help="portrait to enroll (default: the bundled sample)")
    p.add_argument("--frames", type=int, default=48,
                   help=f"frames of orbit.gif, 1 to {MAX_FRAMES} (default %(default)s)")
    p.add_argument("--size", type=int, default=256,
                   help=f"width and height of orbit.gif in pixels (default %(default)s; frontal.png is "
                        f"{FRONTAL_SIZE})")
    p.set_defaults(func=run)


def run(args) -> int:
    from gramcast.cli.avatar_cmd import check_size
    from gramcast.cli.options import check_frames
    from gramcast.errors import OutputPathError

    # before enrolling and before the progress bar, whose line an error at the first frame would land on
    check_frames("--frames", args.frames)
    check_size("--size", args.size)
    made = _outermost_missing(args.out)
    try:   # before enrolling: a folder that cannot be made is found out at once
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot make the output folder {args.out}: {exc.strerror or exc}; give another --out")
    there = {name for name in OUTPUTS if (args.out / name).exists()}
    try:
        _enroll_and_render(args)
    except BaseException:
        _remove_what_was_made(args.out, made, there)     # a failed or stopped demo leaves nothing behind
        raise
    print(f"stream it: gramcast serve --avatar {args.out / 'avatar.gca'}")
    return 0


def _enroll_and_render(args) -> None:
    from gramcast.avatar import Renderer
    from gramcast.cli.avatar_cmd import composite_over, write_turntable
    from gramcast.cli.options import print_warnings
    from gramcast.enrollment import enroll
    from gramcast.media_io import save_image

    avatar = enroll(args.image)
    avatar.save(args.out / "avatar.gca")
    print_warnings("demo", avatar)
    renderer = Renderer(avatar)
    white = (255, 255, 255)
    write_turntable(args, renderer, args.out / "orbit.gif", args.frames, args.size, 24.0, white)
    save_image(args.out / "frontal.png", composite_over(*renderer.render_rgba((0.0, 0.0), FRONTAL_SIZE), white))
    print(f"enrolled {Path(args.image).name}: {args.out / 'avatar.gca'}, {args.out / 'orbit.gif'}, "
          f"{args.out / 'frontal.png'}")


def _outermost_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that ``mkdir(parents=True)`` will make (None: it exists)."""
    missing = None
    for p in (folder, *folder.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_what_was_made(out: Path, made: Path | None, there: set[str]) -> None:
    """The folders this run made, else the outputs that were not there before (one replaced stays: it is
    whole, and the one it replaced is gone either way)."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    for name in set(OUTPUTS) - there:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
