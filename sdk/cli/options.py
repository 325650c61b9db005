"""What several commands share: output file names, frame counts, progress bars, warnings."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Image files `render` and `sample` write (the formats `gramcast` documents; Pillow would write more, e.g.
#: a PDF, under any name).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: Frames of a turntable: encoded as they are rendered, so this bounds the time a typo costs, not memory
#: (2.5 minutes of video at 24 fps).
MAX_FRAMES = 3600


def output_file(text: str) -> Path:
    """-o's type: a file name, refused here while its text is still there to read (a trailing '/' is gone
    once it is a Path, which would then write a file named after the folder)."""
    from gramcast.media_io import output_name_problem

    problem = output_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {problem}")
    return Path(text)


def check_image_name(path: Path) -> None:
    """An image output's suffix is one the command documents; none means PNG (`-o some-device`)."""
    from gramcast.errors import OutputPathError

    suffix = path.suffix.lower()
    if suffix and suffix not in IMAGE_SUFFIXES:
        raise OutputPathError(f"unsupported image format {suffix!r} for {path}: use .png, .jpg or .webp")


def check_frames(option: str, frames: int, least: int = 1, most: int = MAX_FRAMES) -> None:
    from gramcast.errors import GramcastError

    if frames < least:
        raise GramcastError(f"{option} {frames}: give {least} or more")
    if frames > most:
        raise GramcastError(f"{option} {frames}: give at most {most}")


def print_warnings(command: str, avatar) -> None:
    """Enrollment's warnings (the photo made a weaker avatar than a better one would), one line each."""
    for warning in avatar.meta.get("warnings", []):
        print(f"gramcast {command}: warning: {warning}", file=sys.stderr)


def progress(args, total: int, desc: str):
    """A progress bar (a context manager: leaving it closes the bar, so that a line printed after a failure
    is the last one), drawn only where stderr is a terminal (``main`` looked before it rerouted stderr)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not getattr(args, "progress", False))


def counted(n: int, one: str, many: str | None = None) -> str:
    """'1 frame', '2 frames'."""
    return f"{n} {one if n == 1 else many or one + 's'}"
