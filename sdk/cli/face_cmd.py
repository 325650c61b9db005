"""``gramcast prepare-faces`` and ``gramcast face-reference``: datasets and the reference face."""
from __future__ import annotations

from pathlib import Path

from gramcast.cli.options import output_file


def register(sub) -> None:
    p = sub.add_parser(
        "prepare-faces", help="align a folder of photos into a training set",
        description="Detect the face in every photo under SRC, align it to the gramcast crop and write "
                    "DST/images/*.jpg and DST/poses.json (yaw, pitch, roll, person). Photos without "
                    "exactly one usable face are skipped and listed in DST/skipped.json with the reason. "
                    "DST appears whole at the end, or not at all when the run is stopped.")
    p.add_argument("src", type=Path, help="folder of photos: JPEG, PNG, WebP, HEIC, ... (searched recursively, "
                                          "through linked folders; sub-folder = person)")
    p.add_argument("dst", type=Path, help="output folder: a new or empty one (never read as input)")
    p.add_argument("--size", type=int, default=256, choices=(64, 128, 256, 512), help="crop size (default 256)")
    p.add_argument("--min-eye-px", type=float, help="smallest eye distance accepted (default: size / 8)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--pick-largest", action="store_true",
                   help="use the largest face when a photo has several, instead of skipping it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the dataset DST holds (whole: none of its crops are kept)")
    p.set_defaults(func=run_prepare)

    r = sub.add_parser(
        "face-reference", help="rebuild the frontal reference face from studio portraits",
        description="Mean mediapipe mesh of the frontal portraits under DATA (all sub-folders except "
                    "lfw/), symmetrised and placed in world units. Writes the package's reference by default.")
    r.add_argument("--data", type=Path, required=True, help="folder of frontal portraits, e.g. ../shared/data/faces")
    r.add_argument("-o", "--out", type=output_file, help="output .npz (default: the one inside the package)")
    r.set_defaults(func=run_reference)


def run_prepare(args) -> int:
    from gramcast.face.prepare import prepare_faces

    report = prepare_faces(args.src, args.dst, size=args.size, min_eye_distance=args.min_eye_px,
                           workers=args.workers, pick_largest=args.pick_largest,
                           overwrite=args.overwrite)
    print(f"wrote {report.written} aligned faces to {args.dst} ({len(report.skipped)} skipped)")
    reasons: dict[str, int] = {}
    for s in report.skipped:
        kind = s["reason"].split(":")[0]
        reasons[kind] = reasons.get(kind, 0) + 1
    for kind, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:5d}  {kind}")
    if report.skipped:
        print(f"  each skipped file and its reason: {args.dst / 'skipped.json'}")
    return 0 if report.written else 1


def run_reference(args) -> int:
    from gramcast.errors import GramcastError
    from gramcast.face.prepare import find_images
    from gramcast.face.reference import DEFAULT_REFERENCE_PATH, build_reference

    paths = [p for p in find_images(args.data) if "lfw" not in p.relative_to(args.data).parts]
    if not paths:
        raise GramcastError(f"no portraits under {args.data}")
    try:
        ref = build_reference(paths)
    except ValueError as exc:
        raise GramcastError(str(exc)) from exc
    out = args.out or DEFAULT_REFERENCE_PATH
    ref.save(out)
    print(f"reference face from {ref.meta['images']} portraits written to {out}")
    return 0
