"""``gramcast demo``: the main job of the quickstart, as far as the product reaches today."""
from __future__ import annotations

import math
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo", help="render the GRAM generator as a turntable into a folder",
                       description="Render a sample identity of the GRAM generator at several yaws "
                                   "(a turntable GIF and a frontal PNG). Uses the generator shipped in "
                                   "the package when there is one, else a randomly initialised model.")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder (created; default: out)")
    p.add_argument("--checkpoint", type=Path, help="a generator checkpoint (.safetensors) to render")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch
    from tqdm import tqdm

    from gramcast.media_io import save_animation, save_image, to_uint8
    from gramcast.model import GRAMConfig, GRAMModel

    if args.checkpoint:
        model, source = GRAMModel.load(args.checkpoint), str(args.checkpoint)
    else:
        torch.manual_seed(args.seed)
        model, source = GRAMModel.from_config(GRAMConfig.preset("tiny")).eval(), "random-init tiny model (no trained weights ship yet)"
    args.out.mkdir(parents=True, exist_ok=True)
    ws = model.sample_ws(1, seed=args.seed)
    frames = []
    with torch.no_grad():
        for i in tqdm(range(args.frames), desc="render", unit="frame"):
            yaw = 0.5 * math.sin(2 * math.pi * i / args.frames)
            frames.append(to_uint8(model.render(ws, (yaw, 0.0)).rgb[0]))
        frontal = to_uint8(model.render(ws, (0.0, 0.0)).rgb[0])
    save_image(args.out / "frontal.png", frontal)
    save_animation(args.out / "turntable.gif", frames, fps=12)
    print(f"rendered {source}: {args.out / 'turntable.gif'}, {args.out / 'frontal.png'}")
    return 0
