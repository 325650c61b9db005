"""``gramcast evaluate``: compare enrollment methods on a folder of portraits (CLI plug-in)."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="compare enrollment methods on real portraits",
                       description="Enroll every portrait under DIR with each method and measure input-view "
                                   "fidelity (PSNR/SSIM/LPIPS/ID), novel-view identity, multi-view consistency "
                                   "and, for sub-folders holding several photos of one person, identity at the "
                                   "pose of that person's other photos. Writes results.json, results.md and "
                                   "contact_sheet.png into OUT.")
    p.add_argument("dir", type=Path, help="portraits, and/or one sub-folder per person")
    p.add_argument("--methods", default="mesh", help="comma-separated: mesh,graminverter (default mesh)")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder (default: current folder)")
    p.add_argument("--max", type=int, help="evaluate at most this many people")
    p.add_argument("--weights", type=Path, default=None,
                   help="GRAMInverter bundle for the graminverter method (default: the installed one)")
    p.add_argument("--refine-steps", type=int, default=0,
                   help="graminverter: per-image refinement steps of the encoder's w+ (default 0)")
    p.add_argument("--face", default="only", choices=("only", "largest", "center"),
                   help="which face of a photo showing several of similar size: only (skip the photo, as "
                        "enrollment refuses it; the default), largest, or center (sets centred on their subject)")
    p.set_defaults(func=run)


def run(args) -> int:
    from gramcast.errors import GramcastError
    from gramcast.training.enroll_eval import EvalConfig, evaluate_methods, markdown_table

    if not args.dir.is_dir():
        raise GramcastError(f"{args.dir} is not a folder of portraits")
    if args.refine_steps < 0:
        raise GramcastError(f"--refine-steps {args.refine_steps}: give 0 or more")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    results = evaluate_methods(args.dir, args.out, EvalConfig(methods=methods, max_portraits=args.max,
                                                                      weights=args.weights,
                                                                      refine_steps=args.refine_steps,
                                                                      face=args.face))
    print(markdown_table(results))
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, {args.out / 'contact_sheet.png'}")
    return 0
