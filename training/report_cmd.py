"""`gramcast-train report`: score a generator checkpoint for the model card.

    gramcast-train report runs/gan/generator_ema.safetensors --data DATA -o docs/model_card/gan_small

writes ``OUT.png`` (one identity per row, one yaw per column, so 3D consistency and the spread of
identities show at a glance) and ``OUT.json``: FID/KID against the dataset (when the Inception weight is
installed), the sample diversity against real photos (``diversity_ratio``: about 1 is healthy, well
below 1 is mode collapse) and the multi-view consistency (PSNR_mv). Everything is seeded, so two
checkpoints scored with the same options compare.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

YAWS = (-0.4, -0.2, 0.0, 0.2, 0.4)


def register(sub) -> None:
    """Add ``report`` to the `gramcast-train` subparsers ``sub``."""
    p = sub.add_parser("report", help="score a generator checkpoint: sample grid, FID/KID, diversity, PSNR_mv",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("generator", type=Path, help="generator checkpoint (e.g. a GAN run's generator_ema.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder or .zip the generator was trained on")
    p.add_argument("-o", "--out", type=Path, required=True, help="output prefix: writes OUT.png and OUT.json")
    p.add_argument("--identities", type=int, default=6, help="rows of the sample grid (default 6)")
    p.add_argument("--fid-samples", type=int, default=1000, help="generated images for FID/KID (default 1000; 0: skip)")
    p.add_argument("--fid-real", type=int, default=5000, help="real images for FID/KID (default 5000)")
    p.add_argument("--diversity-samples", type=int, default=64, help="images per side of the diversity ratio")
    p.add_argument("--face-samples", type=int, default=16,
                   help="identities for the face/pose check (mediapipe finds a face at the camera's yaw; 0: skip)")
    p.add_argument("--inception", default=None, help="Inception weight file (default: as `gan` finds it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_report)


def score_generator(model, dataset, identities: int = 6, diversity_samples: int = 64, fid_samples: int = 1000,
                    fid_real: int = 5000, inception=None, seed: int = 0, batch: int = 16, face_samples: int = 0):
    """-> (grid ``(3, identities·R, len(YAWS)·R)`` in [0, 1], scores dict). ``inception``: an
    ``InceptionFeatures`` or None (no FID/KID)."""
    import torch

    from gramcast.training.data import PoseSampler
    from gramcast.training.engine.stage import image_grid
    from gramcast.training.evaluation import multiview_consistency, sample_diversity
    from gramcast.training.metrics import generator_fid_kid

    dev = model.device
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = model.mapping(torch.randn(identities, model.config.z_dim, generator=g).to(dev))
        cols = [model.render(ws, torch.tensor([[yaw, 0.0]], device=dev).expand(identities, 2)).rgb for yaw in YAWS]
        scores: dict = {"yaws": list(YAWS), **multiview_consistency(model, ws)}
        n = min(diversity_samples, len(dataset))
        real, poses = dataset.sample(n, g, flip=False, device=dev)
        scores.update(sample_diversity(model, real, poses, g))
        if face_samples > 0:
            scores.update(_face_pose_scores(model, face_samples, seed))
        if inception is not None and fid_samples > 0:
            sampler = PoseSampler(dataset.poses)

            def generate(k: int):
                z = torch.randn(k, model.config.z_dim, generator=g).to(dev)
                return model.render(model.mapping(z), sampler.sample(k, g, device=dev)).rgb.float()

            scores.update(generator_fid_kid(generate, dataset, inception, fid_samples, num_real=fid_real,
                                            batch_size=batch))
    return image_grid(cols), scores


def _face_pose_scores(model, num: int, seed: int) -> dict:
    """``face_pose_agreement`` over the grid's yaws, where mediapipe is installed (a lent GPU machine's
    image has none: the scores then say so instead)."""
    from gramcast.training.evaluation import face_pose_agreement

    try:
        import mediapipe  # noqa: F401
    except ImportError:
        return {"face_pose": "skipped: mediapipe is not installed"}
    return {f"face_pose/{k}": v for k, v in face_pose_agreement(model, num, YAWS, seed).items()}


def run_report(args) -> int:
    import cv2
    import numpy as np

    from gramcast.device import device_option
    from gramcast.errors import GramcastError
    from gramcast.model import GRAMModel
    from gramcast.training.data import FaceDataset
    from gramcast.training.metrics import HOW_TO_GET, InceptionFeatures, find_inception_weights

    device = device_option(args.device)
    model = GRAMModel.load(args.generator, device=device).eval()
    try:
        dataset = FaceDataset(args.data, model.config.resolution)
    except FileNotFoundError as exc:
        raise GramcastError(str(exc)) from None
    inception = None
    if args.fid_samples > 0:
        path = find_inception_weights(args.inception)
        if path is None:
            print(f"FID/KID skipped: no Inception weight installed; enable it with: {HOW_TO_GET}", flush=True)
        else:
            inception = InceptionFeatures(path, device=device)
    grid, scores = score_generator(model, dataset, args.identities, args.diversity_samples, args.fid_samples,
                                   args.fid_real, inception, args.seed, face_samples=args.face_samples)
    scores = {"generator": str(args.generator), "data": str(args.data), "images_in_data": len(dataset),
              "grid": "rows: identities (seeded); columns: yaw " + ", ".join(f"{y:+.1f}" for y in YAWS), **scores}
    out = Path(args.out)
    if out.suffix in (".png", ".json"):     # given as a file name: the prefix is its stem
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    png_path, json_path = out.with_name(out.name + ".png"), out.with_name(out.name + ".json")  # "run1.5" stays
    png = (grid.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)[..., ::-1]
    for path, write in ((png_path, lambda p: cv2.imwrite(str(p), png)),
                        (json_path, lambda p: p.write_text(json.dumps(scores, indent=1) + "\n"))):
        tmp = path.with_name(path.stem + ".part" + path.suffix)   # atomic: never a half-written file
        if write(tmp) is False:
            raise GramcastError(f"could not write {path}")
        os.replace(tmp, path)
    shown = {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)}
    print(f"wrote {png_path} and {json_path}: {shown}", flush=True)
    return 0
