"""``gramcast evaluate``: compare enrollment methods on a folder of portraits (CLI plug-in)."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="compare enrollment methods on real portraits",
                       description="Enroll every portrait under DIR with each method and measure input-view "
                                   "fidelity (PSNR/SSIM/LPIPS/ID), novel-view identity, multi-view consistency "
                                   "and, for people with several photos, identity at the pose of that person's "
                                   "other photos. Writes results.json, results.md and contact_sheet.png into OUT, "
                                   "replacing an earlier run's files there. Exits 2 if a method enrolled none of "
                                   "the portraits. Resumes: each person's results are kept in "
                                   "OUT/.evaluate-progress as they finish (whole files only, also on Ctrl-C), "
                                   "and running the same command again continues where it stopped, with "
                                   "the figures of an uninterrupted run; the folder is removed when the run's "
                                   "files are written. A rerun with other options, methods, portraits, "
                                   "--weights bundle or installed LPIPS/ArcFace weights is refused rather "
                                   "than mixed: add --fresh to start it from nothing.")
    p.add_argument("dir", type=Path,
                   help="one sub-folder per person (the first photo by name is enrolled from); a flat folder's "
                        "photos named <anything>_<NNN>_<anything> are grouped by the person number NNN, else each "
                        "photo is a person of its own")
    p.add_argument("--methods", default="mesh", help="comma-separated: mesh,graminverter (default mesh)")
    p.add_argument("--out", type=Path, default=Path("evaluation"),
                   help="output folder, made if missing, outside DIR; one run into it at a time (default: "
                        "./evaluation)")
    p.add_argument("--max", type=int, help="evaluate at most this many people")
    p.add_argument("--weights", type=Path, default=None,
                   help="GRAMInverter bundle for the graminverter method (default: the installed one); checked, "
                        "with the other options, before any photo is enrolled")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="graminverter: per-image refinement steps of the encoder's w+ (default 0)")
    p.add_argument("--face", default="only", choices=("only", "largest", "center"),
                   help="which face of a photo showing several of similar size: only (skip the photo, as "
                        "enrollment refuses it; the default), largest, or center (sets centred on their subject)")
    p.add_argument("--compare", type=Path, metavar="RESULTS_JSON",
                   help="an earlier run's results.json on the same portraits: print each score's paired change "
                        "with its 95 %% interval (people resampled) and write comparison.md into OUT")
    p.add_argument("--fresh", action="store_true",
                   help="discard the results an interrupted run left in OUT (OUT/.evaluate-progress) and start "
                        "from nothing; without it such a run is resumed when its options, methods, portraits "
                        "and weights are this run's, and refused otherwise")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from gramcast.cli import Terminated
    from gramcast.errors import GramcastError
    from gramcast.training.enroll_eval import EvalConfig, evaluate_methods
    from gramcast.training.eval_progress import PROGRESS_DIR, progress_count
    from gramcast.training.eval_report import failure_summary, markdown_table

    if not args.dir.is_dir():
        raise GramcastError(f"{args.dir} is not a folder of portraits")
    if args.refine_steps < 0:
        raise GramcastError(f"--refine-steps {args.refine_steps}: give 0 or more")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    before = _load_results(args.compare) if args.compare else None
    if before is not None and not set(methods) & set(before["methods"]):
        raise GramcastError(f"--compare {args.compare} holds none of the methods to evaluate ({', '.join(methods)})")
    config = EvalConfig(methods=methods, max_portraits=args.max, weights=args.weights,
                        refine_steps=args.refine_steps, face=args.face)
    try:
        results = evaluate_methods(args.dir, args.out, config, progress=getattr(args, "progress", True),
                                   fresh=getattr(args, "fresh", False))
    except (KeyboardInterrupt, Terminated):      # Ctrl-C, SIGTERM: say what is kept, and how to go on
        kept = progress_count(args.out)
        if kept:
            print(f"gramcast evaluate: kept {kept} finished person result{'s' if kept != 1 else ''} in "
                  f"{args.out / PROGRESS_DIR}; run the same command again to resume", file=sys.stderr, flush=True)
        raise
    print(markdown_table(results))
    print("wrote " + ", ".join(str(args.out / name) for name in results["outputs"]))
    # a method that enrolled nobody has no scores to read or compare: the run failed, whatever it wrote
    empty = [m for m, r in results["methods"].items() if r["means"]["portraits"] == 0]
    for method in results["methods"]:
        line = failure_summary(results, method)
        if line and method not in empty:
            print(f"gramcast evaluate: {line}", file=sys.stderr)
    if empty:
        raise GramcastError("every portrait failed: " + " | ".join(failure_summary(results, m) for m in empty)
                            + f"; {args.out / 'results.json'} lists each photo's reason")
    if before is not None:
        from gramcast.media_io import atomic_output
        from gramcast.training.ship_rule import paired_report, report_markdown

        shared = [m for m in results["methods"] if m in before["methods"]]
        text = "\n".join(report_markdown(paired_report(before, results, m), m, str(args.compare)) for m in shared)
        print(text)
        with atomic_output(args.out / "comparison.md") as tmp:
            tmp.write_text(text)
        print(f"wrote {args.out / 'comparison.md'}")
    return 0


def _load_results(path: Path) -> dict:
    """An earlier ``gramcast evaluate`` results.json, checked before any work."""
    import json

    from gramcast.errors import GramcastError

    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise GramcastError(f"--compare {path}: cannot read it ({exc.strerror})") from None
    except ValueError:
        raise GramcastError(f"--compare {path}: not JSON; give the results.json an earlier evaluate wrote") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise GramcastError(f"--compare {path}: not a gramcast evaluate results.json (no 'methods')")
    return data
