"""Render one identity of the GRAM generator from several viewpoints, with depth and normals.

    python examples/render_gram_views.py [checkpoint.safetensors | bundled:tiny] [-o views.png]

Without a checkpoint the GAN prior that ships in the package (``bundled:tiny``) draws the identity.
"""
import argparse

import numpy as np

from gramcast.camera import Pose
from gramcast.media_io import save_image, to_uint8
from gramcast.model import GRAMModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?", default="bundled:tiny")
    ap.add_argument("-o", "--out", default="views.png")
    args = ap.parse_args()

    model = GRAMModel.load(args.checkpoint).eval()
    ws = model.sample_ws(1, seed=7)
    poses = [Pose(yaw, 0.0) for yaw in (-0.5, -0.25, 0.0, 0.25, 0.5)]
    rows = {"rgb": [], "depth": [], "normal": []}
    for pose in poses:
        out = model.render(ws, pose, with_normals=True)
        rows["rgb"].append(to_uint8(out.rgb[0]))
        d = out.depth[0, 0]
        d = (d - d.min()) / (d.max() - d.min() + 1e-8) * 2 - 1          # depth as grey levels
        rows["depth"].append(to_uint8(d.expand(3, -1, -1)))
        rows["normal"].append(to_uint8(out.normal[0].detach()))          # xyz -> rgb
    sheet = np.concatenate([np.concatenate(r, axis=1) for r in rows.values()], axis=0)
    save_image(args.out, sheet)
    print(f"wrote {args.out}: rows rgb / depth / normals, yaw -0.5 .. 0.5")


if __name__ == "__main__":
    main()
