"""Compare enrollment methods on real portraits (``gramcast evaluate``).

For every portrait: input-view fidelity (PSNR / SSIM / LPIPS / identity between the photo's aligned
crop and the avatar rendered at the photo's pose, re-aligned the same way), novel-view identity
(ID_nv: the photo vs renders at yaw ±0.4) and multi-view consistency (PSNR_mv / SSIM_mv: a view
depth-warped into its neighbour, the yaw protocol of GRAMInverter's Sec. 4). For people with several
photos: enroll from the first, render at the pose of each other photo and compare identities
(``id_xpose``), and the mirror check for the same pair (render at the mirrored pose vs the mirrored photo).
``id_photos``, the enrolled photo itself against the other photo, is id_xpose's reference: what the
photo alone carries of the person at the other pose (an avatar that added nothing and lost nothing).
The outline: ``sil`` at the input view and ``sil_xpose`` at the other photo's pose, the intersection over
union of where the render (aligned like a photo) is opaque and where that photo's person matte holds the
majority, over the head (``outline_iou``): what the identity scores do not see, a turned head's outline
(the neck behind the jaw, the back of the head) against a real one. Its hair and shoulders may differ
from day to day, so it compares methods on the same pairs, not an avatar with a perfect score.
LPIPS and identity need their weights (``gramcast.training.pretrained``); without them they are null.

People: each sub-folder of the evaluated folder is a person (the layout to use). A flat folder of loose
photos is grouped by the person number in the file names where that is unambiguous (``find_portraits``),
else every loose photo is a person of its own, who has no second photo for id_xpose.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gramcast.errors import GramcastError
from gramcast.training import eval_placement as placement
from gramcast.training.eval_portraits import find_portraits, layout_notes
from gramcast.training.eval_progress import EvalProgress, hold_out, run_fingerprint
from gramcast.training.eval_report import SHEET_TILE, contact_sheet, write_outputs
from gramcast.training.eval_scores import TURN_YAWS, LearnedScores, head_turn, masked_psnr, outline_iou, ssim

__all__ = ["evaluate_methods", "evaluate_portrait", "EvalConfig"]

MV_YAW_PAIRS = ((-0.3, -0.2), (-0.1, 0.0), (0.0, 0.1), (0.2, 0.3))
NOVEL_YAWS = (-0.4, 0.4)
#: people on the contact sheet (the first ones evaluated, each under every method): more makes an image
#: too tall to look at, and each shown person costs a strip of renders per method
SHEET_PEOPLE = 40


@dataclass(frozen=True)
class EvalConfig:
    methods: tuple[str, ...] = ("mesh",)
    resolution: int = 256
    max_portraits: int | None = None
    strip_yaws: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5)
    #: evaluation sets (e.g. LFW, ~40 px between the eyes) go below the enrollment floor
    min_eye_distance: float = 20.0
    #: GRAMInverter bundle for the graminverter method (None: the installed one)
    weights: Path | None = None
    #: graminverter: per-image refinement steps of the encoder's w+ (InverterConfig.refine_steps)
    refine_steps: int = 0
    #: which face of a photo with several of similar size (``gramcast.enroll``'s ``face``): "only" refuses
    #: such photos, as enrollment does by default; "center" suits sets centred on their subject (LFW)
    face: str = "only"


def evaluate_portrait(avatar, photo_aligned, matte: np.ndarray, metrics: LearnedScores, res: int,
                      shows_photo: np.ndarray | None = None) -> dict:
    """The input-view and novel-view scores of ``avatar`` enrolled from ``photo_aligned`` (its crop ``res``²
    and person ``matte``); ``shows_photo`` ``(res, res)`` bool: where that crop shows the photo (PSNR, SSIM
    and the outline are scored there only; None: everywhere)."""
    from gramcast.avatar import Renderer
    from gramcast.training.evaluation import warp_to_target

    renderer = Renderer(avatar, device="cpu")
    pose = avatar.meta.get("input_pose", {"yaw": photo_aligned.pose.yaw, "pitch": photo_aligned.pose.pitch})
    rgb, alpha = renderer.render_rgba((pose["yaw"], pose["pitch"]), res)
    row: dict = {}
    try:
        again = placement.input_view_in_crop(avatar, placement.over_grey(rgb, alpha), res)
        a_alpha = placement.opacity_in_crop(alpha, again.crop_from_image, res)
        # what the render's frame covers of the crop; beyond it the photo is greyed as the render is, so that
        # the perceptual scores compare what the avatar is asked to show
        framed = again.frame > 0.5
        scored = framed if shows_photo is None else framed & shows_photo
        photo = np.where(framed[..., None], photo_aligned.crop, np.uint8(128))
        mask = (matte > 0.5) & (a_alpha > 0.99) & scored
        row["psnr"] = masked_psnr(again.crop, photo, mask)
        row["ssim"] = ssim(torch.from_numpy(again.crop).permute(2, 0, 1) / 255.0,
                           torch.from_numpy(photo).permute(2, 0, 1) / 255.0, torch.from_numpy(mask))
        row["lpips"] = metrics.lpips_distance(again.crop, photo)
        row["id"] = metrics.identity(again.crop, photo)
        row["sil"] = outline_iou(a_alpha, matte, placement.head_rows(photo_aligned, res), scored)
    except GramcastError:
        row.update(psnr=None, ssim=None, lpips=None, id=None, sil=None, note="no face found in the input-view render")
    seen = {}                                  # camera yaw -> the render aligned by the face tracker
    for yaw in sorted(set(NOVEL_YAWS) | set(TURN_YAWS)):
        nrgb, nalpha = renderer.render_rgba((yaw, 0.0), res)
        try:
            seen[yaw] = placement.align_photo(placement.over_grey(nrgb, nalpha), res)
        except GramcastError:
            pass
    ids = [metrics.identity(seen[y].crop, photo_aligned.crop) if y in seen else None for y in NOVEL_YAWS]
    row["id_nv"] = float(np.mean(ids)) if ids and all(i is not None for i in ids) else None
    row.update(head_turn(seen))
    ps, ss = [], []
    for a, b in MV_YAW_PAIRS:
        src, tgt = renderer.render([(a, 0.0)], res), renderer.render([(b, 0.0)], res)
        warped, vis = warp_to_target(src.rgb, src.depth, tgt.depth, (a, 0.0), (b, 0.0))
        m = (vis & (tgt.alpha > 0.99) & (src.alpha.mean() > 0))[0, 0]
        w8 = ((warped[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
        t8 = ((tgt.rgb[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
        ps.append(masked_psnr(w8, t8, m.numpy()))
        ss.append(ssim(torch.from_numpy(w8).permute(2, 0, 1) / 255, torch.from_numpy(t8).permute(2, 0, 1) / 255, m))
    row["psnr_mv"], row["ssim_mv"] = float(np.nanmean(ps)), float(np.nanmean(ss))
    return row


def _check_config(config: EvalConfig, out: Path) -> None:
    """Every option checked before any photo is read: a mistake found after the first method's pass over
    the people is tens of minutes lost on a real set."""
    from gramcast.enrollment import METHODS
    from gramcast.face.alignment import FACE_CHOICES

    # enroll() refuses an unknown method too, but per portrait, where the refusals become rows of a run that
    # "succeeds"; and a slice by a count below 1 silently drops people from the end or keeps them all
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        what = f"unknown method {', '.join(map(repr, unknown))}" if unknown else "no method given"
        raise GramcastError(f"--methods: {what}; give a comma-separated list of {', '.join(METHODS)}")
    twice = sorted({m for m in config.methods if config.methods.count(m) > 1})
    if twice:
        raise GramcastError(f"--methods: {', '.join(twice)} given twice; give each method once")
    if config.max_portraits is not None and config.max_portraits < 1:
        raise GramcastError(f"--max {config.max_portraits}: give 1 or more people (or leave --max out for all)")
    if config.face not in FACE_CHOICES:
        raise GramcastError(f"--face {config.face!r}: use one of {', '.join(FACE_CHOICES)}")
    if not (isinstance(config.refine_steps, int) and config.refine_steps >= 0):
        raise GramcastError(f"--refine-steps {config.refine_steps}: give 0 or more")
    # options of the learned method, given without it, would be ignored without a word: the run would look
    # like an evaluation of those weights
    if "graminverter" not in config.methods:
        given = [o for o, v in (("--weights", config.weights), ("--refine-steps", config.refine_steps)) if v]
        if given:
            names, listed = " and ".join(given), ",".join(config.methods)
            raise GramcastError(f"{names} {'apply' if len(given) > 1 else 'applies'} to the graminverter method "
                                f"only, and --methods is {listed}: add graminverter to --methods "
                                f"(--methods {listed},graminverter) or leave {names} out")
    if out.exists() and not out.is_dir():
        raise GramcastError(f"--out {out}: it is a file, not a folder; give a folder for the results")
    above = next((p for p in out.absolute().parents if p.exists()), None) if not out.exists() else out
    if above is None or not above.is_dir():
        raise GramcastError(f"--out {out}: {above} is a file, not a folder; give another output folder")
    if not os.access(above, os.W_OK):
        raise GramcastError(f"--out {out}: {above} is read-only; give another output folder")


def _for_evaluate(message: str) -> str:
    """The inverter's messages name ``gramcast enroll``'s option; evaluate's is --methods."""
    return re.sub(r";?\s*or use --method mesh\b", "; or evaluate --methods mesh alone", message)


def _load_inverter(weights: Path | None):
    """The graminverter bundle loaded before any photo: a missing file, a foreign one or one whose networks
    do not fit together (``load_inverter`` checks that from the header) is one line now, not a refusal (or
    a traceback) after the mesh pass."""
    from gramcast.avatar.graminverter import HOW_TO_TRAIN, find_inverter, load_inverter

    path = find_inverter(weights)
    if path is None:
        raise GramcastError("--methods graminverter needs trained weights, and none are installed: "
                            + _for_evaluate(HOW_TO_TRAIN))
    if not path.is_file():
        raise GramcastError(f"--weights {path}: {'a folder' if path.is_dir() else 'no such file'}; give the "
                            "bundle `gramcast-train export-inverter` wrote (or leave --weights out for the installed "
                            "one), or evaluate --methods mesh alone")
    try:
        return load_inverter(path)
    except GramcastError as exc:
        raise GramcastError(_for_evaluate(str(exc))) from None


def _evaluate_person(method: str, person: str, photos: list[Path], options: dict, show: bool, config: EvalConfig,
                     metrics: LearnedScores) -> dict:
    """One person under one method: ``{"person", "row", "pairs", "lost", "enroll_s", "strip"}``, everything
    the run's figures and sheet take from them (``strip``: the contact sheet's renders, where ``show``)."""
    from gramcast.avatar import Renderer
    from gramcast.enrollment import enroll
    from gramcast.face import foreground_matte
    from gramcast.images import load_image

    record: dict = {"person": person, "row": None, "pairs": [], "lost": [], "enroll_s": None, "strip": None}
    try:
        first = load_image(photos[0])
        aligned = placement.align_photo(first, config.resolution, config.face)
        t0 = time.perf_counter()
        # the methods are compared on every photo: the product's gates on small and turned faces off
        avatar = enroll(first, method=method, min_eye_distance=config.min_eye_distance, max_yaw=None,
                        face=config.face, **options)
        record["enroll_s"] = time.perf_counter() - t0
    except GramcastError as exc:
        record["row"] = {"person": person, "photo": photos[0].name, "error": str(exc)}
        # the person's other photos are pairs this run could not score: counted, not dropped unseen
        record["lost"] = [{"person": person, "source": photos[0].name, "target": other.name,
                           "error": f"not enrolled: {photos[0].name} failed"} for other in photos[1:]]
        return record
    row = {"person": person, "photo": photos[0].name}
    row.update(evaluate_portrait(avatar, aligned, foreground_matte(aligned.crop), metrics, config.resolution,
                                 placement.shows_photo(aligned, config.resolution, first.shape[:2])))
    record["row"] = row
    renderer = Renderer(avatar, device="cpu")
    if show:
        record["strip"] = np.hstack([placement.over_grey(*renderer.render_rgba((y, 0.0), SHEET_TILE), grey=255)
                                     for y in config.strip_yaws])
    for other in photos[1:]:
        try:
            image = load_image(other)
            target = placement.align_photo(image, config.resolution, config.face)
            mirror_target = placement.align_photo(np.ascontiguousarray(image[:, ::-1]), config.resolution, config.face)
        except GramcastError as exc:
            record["lost"].append({"person": person, "source": photos[0].name, "target": other.name,
                                   "error": str(exc)})
            continue
        p = target.pose
        view, view_alpha = placement.aligned_render(renderer, (p.yaw, p.pitch), config.resolution)
        mview, _ = placement.aligned_render(renderer, (-p.yaw, p.pitch), config.resolution)
        pair = {"person": person, "source": photos[0].name, "target": other.name,
                "yaw": p.yaw, "pitch": p.pitch,
                "id_xpose": None if view is None else metrics.identity(view.crop, target.crop),
                "id_xpose_mirror": None if mview is None else metrics.identity(mview.crop, mirror_target.crop),
                # id_xpose's reference: the enrolled photo itself against the other one
                "id_photos": metrics.identity(aligned.crop, target.crop),
                "sil_xpose": None if view is None else outline_iou(
                    view_alpha, foreground_matte(target.crop), placement.head_rows(target, config.resolution),
                    placement.shows_photo(target, config.resolution, image.shape[:2])
                    & (placement.frame_in_crop(view_alpha.shape, view.crop_from_image, config.resolution) > 0.5))}
        if view is None or mview is None:
            pair["note"] = "no face found in the render at the other photo's pose (or its mirror)"
        record["pairs"].append(pair)
    return record


def evaluate_methods(root: Path, out: Path, config: EvalConfig = EvalConfig(), progress: bool = True,
                     fresh: bool = False) -> dict:
    """Run every method on every portrait under ``root``; write results.json, results.md and, where some
    portrait was enrolled, contact_sheet.png into ``out`` (``RUN_OUTPUTS`` of an earlier run that this one
    does not write are removed). ``results["outputs"]``: the files written. Options, the graminverter bundle
    and ``out`` are checked before any photo is read.

    Each person's results are kept in ``out/PROGRESS_DIR`` as they are finished (one file each, written
    atomically), and removed once the run's files are written. A run into an ``out`` holding an interrupted
    run's progress resumes it: people already done are not evaluated again, and the figures are those of
    an uninterrupted run. The interrupted run must have had the same fingerprint (options, methods,
    portraits, bundle weights, installed score weights, gramcast version); otherwise this is refused, before
    any work, unless ``fresh`` (discard that progress and start from nothing). A second run into ``out``
    while this one runs is refused (``hold_out``)."""
    _check_config(config, out)
    # OUT in the portraits: the next run would read its contact_sheet.png as a portrait (a person more, who
    # fails, or a flat folder no longer grouped by person), and an interrupted run's portraits would change
    # under it, so that it could not be resumed
    if root.resolve() in (out.resolve(), *out.resolve().parents):
        raise GramcastError(f"--out {out} is inside the portraits folder {root}: the next run would take its "
                            f"contact_sheet.png for a portrait; give an --out outside {root}")
    people = find_portraits(root)
    if not people:
        raise GramcastError(f"no portraits under {root}: give a folder of photos, or one sub-folder per person")
    if config.max_portraits is not None:
        people = people[: config.max_portraits]
    # loaded once here, not per portrait, and before the first method's pass
    inverter = _load_inverter(config.weights) if "graminverter" in config.methods else None
    metrics = LearnedScores()
    # held from before its progress is read until its files are written: a second run into ``out`` meanwhile
    # is refused, not mixed with this one
    with hold_out(out):
        return _evaluate_people(root, out, people, config, inverter, metrics, progress, fresh)


def _evaluate_people(root: Path, out: Path, people: list, config: EvalConfig, inverter, metrics: LearnedScores,
                     progress: bool, fresh: bool) -> dict:
    """``evaluate_methods`` once its options are checked and ``out`` is held: resume or start the run's
    progress, evaluate the people not yet done, and write the run's files."""
    from tqdm import tqdm

    kept = EvalProgress(out, run_fingerprint(root, people, config, inverter, metrics), fresh)
    if kept.done:
        import sys

        print(f"resuming the interrupted evaluation in {out}: {len(kept.done)} of "
              f"{len(people) * len(config.methods)} person results kept", file=sys.stderr, flush=True)
    kept.start()
    results: dict = {"root": str(root), "methods": {}, "notes": metrics.notes + layout_notes(root, people)}
    cells: dict[str, dict[int, np.ndarray]] = {}      # method -> person's index -> strip on the contact sheet
    shown: set[int] = set()
    for method in config.methods:
        rows, xpose, lost, t_enroll = [], [], [], []
        options = {"weights": inverter, "refine_steps": config.refine_steps} if method == "graminverter" else {}
        for index, (person, photos) in enumerate(tqdm(people, desc=f"evaluate {method}", unit="person",
                                                      disable=not progress)):
            # the sheet shows the first SHEET_PEOPLE people some method enrolled, decided in this order on
            # resumed and new records alike
            show = index in shown or len(shown) < SHEET_PEOPLE
            record = kept.record(method, index)
            if record is None:
                record = _evaluate_person(method, person, photos, options, show, config, metrics)
                kept.save(method, index, record)
            strip = record.get("strip")
            rows.append(record["row"])
            xpose += record["pairs"]
            lost += record["lost"]
            if record["enroll_s"] is not None:
                t_enroll.append(record["enroll_s"])
            if strip is not None and show:
                shown.add(index)
                cells.setdefault(method, {})[index] = strip
        keys = ["psnr", "ssim", "lpips", "id", "id_nv", "psnr_mv", "ssim_mv", "yaw_slope", "yaw_error", "sil"]
        means = {}
        for k in keys:
            vals = [r[k] for r in rows if r.get(k) is not None and not math.isnan(r[k])]
            means[k] = float(np.mean(vals)) if vals else None
        for k in ("id_xpose", "id_xpose_mirror", "id_photos", "sil_xpose"):
            vals = [r[k] for r in xpose if r.get(k) is not None]
            means[k] = float(np.mean(vals)) if vals else None
        means["enroll_s"] = float(np.mean(t_enroll)) if t_enroll else None
        means["portraits"] = sum(1 for r in rows if "error" not in r)
        means["failed"] = sum(1 for r in rows if "error" in r)
        means["pairs"] = len(xpose)
        means["pairs_failed"] = len(lost)
        results["methods"][method] = {"means": means, "portraits": rows, "cross_pose": xpose,
                                      "cross_pose_failed": lost}
    if {"mesh", "graminverter"} <= set(results["methods"]):
        from gramcast.training.ship_rule import ship_verdict

        results["verdict"] = ship_verdict(results)
    on_sheet = [(people[i][0], i) for i in sorted(shown)]
    if not on_sheet:
        results["notes"].append("no contact sheet: no method enrolled anyone")
    elif len(on_sheet) < len(people):
        why = (f"the first {SHEET_PEOPLE} that a method enrolled, under every method" if len(on_sheet) == SHEET_PEOPLE
               else "no method enrolled the others")
        results["notes"].append(f"contact_sheet.png shows {len(on_sheet)} of the {len(people)} people: {why}")
    sheet = contact_sheet(cells, on_sheet, config.methods, config.strip_yaws) if on_sheet else None
    write_outputs(out, results, sheet)
    kept.discard()            # the run's files are written: its progress has served
    return results
