"""Hair edges against the truth: studio portraits keyed onto new backgrounds, enrolled, rendered at the
input view over grey and compared with the keyed portrait over grey. Mesh configurations side by side.

    python bench/matte_edges.py [--data ../shared/data/faces] [--every 6] [--backgrounds photo,blue,white]
                                [--variants without:foreground_colours=0,with:foreground_colours=1]
                                [--json docs/bench/matte_edges.json]

An input-view score against an ordinary photo rewards copying the photo's halo of its own background; an
avatar is drawn over other backgrounds, where that halo is wrong. Studio photos (London and Canada sets,
plain backdrops) give a ground truth: the backdrop is fitted by a smooth (quadratic) colour field, and
every edge pixel's opacity and colour solve the compositing equation against it and the nearby solid
foreground; where foreground and backdrop are too alike to solve, the selfie matte's value is kept. Each
portrait is composited over each background kind (``photo``: a blurred LFW photo, ``blue``, ``white``),
enrolled with every variant (MeshConfig options), rendered at the input pose, realigned, and scored by
PSNR in the ground truth's soft-edge band, over the head, over the whole crop, and over the ring around the
crop that the texture takes from the photo (``ring_score``, which also scores the person matte itself
against the truth's opacity). ``people`` (not in the
default set): a mosaic of unblurred LFW photos, whose faces and bodies beside the head the matte must
leave out; what it keeps of them shows in the crop's score. Printed: means per
variant and background, and each variant's paired difference against the first. The keyed truth uses the
same selfie model where the backdrop cannot decide, so it favours no variant there; it is not a
hand-made matte.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import FACES, emit, run_quietly

import cv2
import numpy as np

from gramcast.face.matte import disc

FLAT_COLOURS = {"blue": (30, 60, 200), "white": (250, 250, 250), "red": (200, 40, 40), "green": (40, 170, 60)}


def spread(mask: np.ndarray, image: np.ndarray, sigma: float) -> np.ndarray:
    """``image``'s colours where ``mask``, carried outward by normalised convolution at growing scales."""
    out, have = np.zeros_like(image), np.zeros(mask.shape, bool)
    for s in sigma * 2.0 ** np.arange(5):
        num = cv2.GaussianBlur(image * mask[..., None], (0, 0), s)
        den = cv2.GaussianBlur(mask.astype(np.float64), (0, 0), s)
        ok = (den > 1e-3) & ~have
        out[ok] = num[ok] / den[ok, None]
        have |= ok
    return out


def keyed_truth(rgb: np.ndarray, matte: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Opacity ``(H, W)`` and foreground colour ``(H, W, 3)`` of a studio portrait with a smooth backdrop;
    ``matte``: the selfie model's, which picks the sure regions and decides where the backdrop cannot."""
    image = rgb.astype(np.float64)
    h, w = matte.shape

    def basis(x, y):
        x, y = x / w - 0.5, y / h - 0.5
        return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1)

    sure_bg = cv2.erode((matte < 0.02).astype(np.uint8), disc(12)) > 0
    ys, xs = np.nonzero(sure_bg)
    pick = rng.choice(len(ys), min(20000, len(ys)), replace=False)
    coef = np.linalg.lstsq(basis(xs[pick].astype(float), ys[pick].astype(float)), image[ys[pick], xs[pick]],
                           rcond=None)[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    backdrop = basis(xx, yy) @ coef
    sure_fg = cv2.erode((matte > 0.98).astype(np.uint8), disc(6)) > 0
    fg = spread(sure_fg, image, 3.0)
    seen, apart = image - backdrop, fg - backdrop
    apart2 = (apart * apart).sum(-1)
    alpha = np.clip((seen * apart).sum(-1) / np.maximum(apart2, 1e-6), 0, 1)
    near = cv2.dilate((matte > 0.02).astype(np.uint8), disc(12)) > 0
    alpha = np.where(sure_fg, 1.0, np.where(near, alpha, 0.0))
    alpha = np.where((np.sqrt(apart2) < 35) & ~sure_fg, matte, alpha)
    colour = np.where(alpha[..., None] > 0.3,
                      np.clip(backdrop + seen / np.maximum(alpha, 0.05)[..., None], 0, 255), fg)
    return alpha, colour


def background(kind: str, h: int, w: int, photos: list[Path], rng) -> np.ndarray:
    if kind == "people" and photos:
        # a 3 x 3 mosaic of unblurred LFW photos: faces, shoulders and clutter beside the subject's head,
        # each face about half the subject's size (what the segmentation must leave out)
        from gramcast.images import load_image
        rows = [np.concatenate([cv2.resize(load_image(photos[rng.integers(len(photos))]), (w // 3 + 1, h // 3 + 1),
                                           interpolation=cv2.INTER_CUBIC) for _ in range(3)], 1) for _ in range(3)]
        return np.concatenate(rows, 0)[:h, :w].astype(np.float64)
    if kind == "photo":
        if photos:
            from gramcast.images import load_image
            src = load_image(photos[rng.integers(len(photos))]).astype(np.float64)
            src = cv2.resize(src, (w, h), interpolation=cv2.INTER_CUBIC)
        else:   # no LFW here: a smooth random texture stands in for a room
            src = cv2.resize(rng.uniform(0, 255, (8, 8, 3)), (w, h), interpolation=cv2.INTER_CUBIC)
        return cv2.GaussianBlur(src, (0, 0), 5)
    shade = np.linspace(0.85, 1.1, h)[:, None, None]
    return np.clip(np.array(FLAT_COLOURS[kind], float) * shade * np.ones((h, w, 1)), 0, 255)


def truth_in_crop(comp: np.ndarray, truth_grey: np.ndarray, alpha: np.ndarray, size: int = 256):
    """The truth over grey ``(S, S, 3)`` in ``comp``'s aligned crop, and that crop's masks ``(S, S)`` of the
    truth's soft-edge band and of the head."""
    from gramcast.face.alignment import detect_and_align, warp_to_crop

    aligned = detect_and_align(comp, size=size)
    truth = warp_to_crop(truth_grey, aligned.crop_from_image, size)
    opacity = warp_to_crop(alpha.astype(np.float32), aligned.crop_from_image, size)
    band = cv2.dilate(((opacity > 0.02) & (opacity < 0.98)).astype(np.uint8), disc(3)) > 0
    head = cv2.dilate((opacity > 0.02).astype(np.uint8), disc(3)) > 0
    return truth, band, head


def score(comp: np.ndarray, truth, band, head, options: dict, size: int = 256) -> dict:
    """Enroll ``comp`` with ``options``, render at its pose over grey, place the render on the photo's aligned
    crop as the enrollment recorded (``eval_placement.input_view_in_crop``) and compare with the truth
    (``truth_in_crop``)."""
    import gramcast
    from gramcast.avatar.renderer import Renderer
    from gramcast.compositing import over
    from gramcast.training.eval_placement import input_view_in_crop
    from gramcast.training.eval_scores import masked_psnr

    avatar = gramcast.enroll(comp, method="mesh", face="largest", **options)
    pose = avatar.meta["input_pose"]
    rgb, a = Renderer(avatar, device="cpu").render_rgba((pose["yaw"], pose["pitch"]), size)
    render = input_view_in_crop(avatar, over(rgb, a, np.full_like(rgb, 128)), size).crop
    return {"psnr_band": masked_psnr(render, truth, band), "psnr_head": masked_psnr(render, truth, head),
            "psnr_all": masked_psnr(render, truth, np.ones_like(band))}


def ring_score(comp: np.ndarray, truth_grey: np.ndarray, truth_alpha: np.ndarray, options: dict, matting,
               size: int = 512) -> dict:
    """Around the aligned crop (``MeshConfig.context_margin``; the crop itself excluded, and what lies beyond
    the photo), what the texture takes from the photo, which turned views show beside the head and a render at
    the input pose does not reach: ``psnr_ring``, the widened crop's colours under its matte
    (``mesh_method.photo_colours``) over grey against the truth over grey. And the person matte itself
    against the truth's opacity over the widened crop (where the photo has pixels), as masses of
    |matte - truth| in % of the aligned crop's area: ``matte_error`` in all, ``matte_junk_ring`` (matte above
    the truth, around the crop)."""
    from gramcast.avatar.mesh_method import MeshConfig, photo_colours
    from gramcast.avatar.mesh_photo import photo_context
    from gramcast.compositing import over
    from gramcast.face.alignment import detect_and_align, warp_to_crop
    from gramcast.training.eval_scores import masked_psnr

    config = MeshConfig(**options)
    aligned = detect_and_align(comp, size=size, face="largest")
    ctx = photo_context(comp, aligned, config.context_margin, matting, config.agreed_matte, config.matte_look_margin,
                        config.colour_cut_from)
    colour, matte = photo_colours(ctx.crop, ctx.matte, config)
    pad, side = int(ctx.offset), ctx.crop.shape[0]
    wide_from_image = aligned.crop_from_image + np.array([[0, 0, pad], [0, 0, pad]])
    truth = warp_to_crop(truth_grey, wide_from_image, side)
    opacity = warp_to_crop(truth_alpha.astype(np.float32), wide_from_image, side)
    ring = ctx.inside.copy()
    ring[pad:pad + aligned.size, pad:pad + aligned.size] = False
    area = 0.01 * aligned.size ** 2
    return {"psnr_ring": masked_psnr(over(colour, matte, np.full_like(colour, 128)), truth, ring),
            "matte_error": float((np.abs(ctx.matte - opacity) * ctx.inside).sum() / area),
            "matte_junk_ring": float(np.clip(ctx.matte - opacity, 0, None)[ring].sum() / area)}


def parse_variants(text: str) -> dict[str, dict]:
    """``name:key=value;key=value,name2:...`` -> {name: MeshConfig options}, each value read as its field's
    type (booleans as 0/1)."""
    import dataclasses

    from gramcast.avatar.mesh_method import MeshConfig

    types = {f.name: type(f.default) for f in dataclasses.fields(MeshConfig)}
    out = {}
    for item in filter(None, text.split(",")):
        name, _, opts = item.partition(":")
        options = {}
        for kv in filter(None, opts.split(";")):
            key, _, value = kv.partition("=")
            if key not in types:
                raise SystemExit(f"{key!r} is not a MeshConfig option: choose from {', '.join(types)}")
            options[key] = bool(int(value)) if types[key] is bool else types[key](value)
        out[name] = options
    return out


def main() -> None:
    run_quietly(run)


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=FACES)
    ap.add_argument("--every", type=int, default=6, help="every n-th photo of each studio set")
    ap.add_argument("--backgrounds", default="photo,blue,white")
    ap.add_argument("--variants", default="without:foreground_colours=0,with:foreground_colours=1",
                    help="name:option=value;... per variant, comma-separated; the first is the reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from gramcast.compositing import over
    from gramcast.errors import GramcastError
    from gramcast.face import foreground_matte
    from gramcast.face.matte import Matting
    from gramcast.images import load_image

    portraits = [p for s in ("london", "canada") for p in sorted((args.data / s).glob("*.jpg"))[::args.every]]
    if not portraits:
        raise SystemExit(f"no studio portraits under {args.data}/london or /canada: pass --data")
    lfw = sorted((args.data / "lfw").glob("*/*.jpg"))
    variants = parse_variants(args.variants)
    kinds = args.backgrounds.split(",")
    rng = np.random.default_rng(args.seed)
    rows, start = [], time.perf_counter()
    with Matting(one_person=True) as matting:     # the ring scores' looks
        for n, path in enumerate(portraits):
            rgb = load_image(path)
            alpha, colour = keyed_truth(rgb, foreground_matte(rgb), rng)
            for kind in kinds:
                comp = over(colour, alpha, background(kind, *rgb.shape[:2], lfw, rng))
                row = {"photo": path.name, "background": kind}
                try:
                    grey = over(colour, alpha, np.full_like(colour, 128.0))
                    truth = truth_in_crop(comp, grey, alpha)
                    for name, options in variants.items():
                        row[name] = score(comp, *truth, options)
                        row[name].update(ring_score(comp, grey, alpha, options, matting))
                except GramcastError as e:
                    print(f"skipped {path.name} over {kind}: {e}")
                    continue
                rows.append(row)
            print(f"{n + 1}/{len(portraits)} portraits, {time.perf_counter() - start:.0f} s", flush=True)

    keys = ("psnr_band", "psnr_head", "psnr_all", "psnr_ring", "matte_error", "matte_junk_ring")
    first = next(iter(variants))
    summary = {}
    for name in variants:
        # nanmean: a photo with no pixels around its aligned crop has no ring to score
        summary[name] = {kind: {k: float(np.nanmean([r[name][k] for r in rows if r["background"] == kind]))
                                for k in keys} for kind in kinds}
        summary[name]["all"] = {k: float(np.nanmean([r[name][k] for r in rows])) for k in keys}
        if name != first:
            for k in keys:
                # the matte's errors: lower is better; "worst" is the pair that lost most either way
                d = np.array([r[name][k] - r[first][k] for r in rows]) * (-1 if k.startswith("matte") else 1)
                d = d[np.isfinite(d)]
                summary[name][f"{k}_vs_{first}"] = {"mean": float(d.mean()), "worst": float(d.min()),
                                                    "better_fraction": float((d > 0).mean())}
    print(f"\n{'variant':<12}{'background':<12}" + "".join(f"{k:>16}" for k in keys))
    for name in variants:
        for kind in kinds + ["all"]:
            print(f"{name:<12}{kind:<12}" + "".join(f"{summary[name][kind][k]:>16.2f}" for k in keys))
    for name in list(variants)[1:]:
        print(f"{name} against {first}, paired (mean gain, worst, fraction better; PSNR in dB, matte errors in "
              "% of the crop, a fall counted as a gain): " + "; ".join(
                  "{} {mean:+.2f}, {worst:+.2f}, {better_fraction:.0%}".format(k, **summary[name][f"{k}_vs_{first}"])
                  for k in keys))
    emit({"portraits": len(portraits), "pairs": len(rows), "variants": variants, "summary": summary,
          "rows": rows}, args.json)


if __name__ == "__main__":
    main()
