"""Enroll an avatar from one photo and save a turntable, through the Python API.

    python examples/enroll_and_orbit.py [PHOTO] [OUT_DIR]
"""
import math
import sys
from pathlib import Path

import numpy as np

import gramcast
from gramcast.errors import GramcastError
from gramcast.media_io import save_animation

if any(a in ("-h", "--help") for a in sys.argv[1:]):
    sys.exit(__doc__)
photo = sys.argv[1] if len(sys.argv) > 1 else Path(gramcast.__file__).parent / "assets" / "sample_portrait.png"
out = Path(sys.argv[2] if len(sys.argv) > 2 else "out")

try:
    avatar = gramcast.enroll(photo)                  # align -> pose -> matte -> invert -> bake
except GramcastError as exc:                         # a photo it cannot use: the message says what to do
    sys.exit(f"enroll_and_orbit.py: {exc}")
out.mkdir(parents=True, exist_ok=True)               # only now: a refused photo leaves no empty folder
avatar.save(out / "me.gca")

renderer = gramcast.Renderer(gramcast.Avatar.load(out / "me.gca"))
poses = [(0.5 * math.sin(2 * math.pi * i / 36), 0.1 * math.sin(4 * math.pi * i / 36)) for i in range(36)]
frames = []
for pose in poses:
    rgb, alpha = renderer.render_rgba(pose, 256)     # straight colour (H, W, 3) uint8, alpha (H, W)
    white = np.full_like(rgb, 255)
    frames.append((rgb * alpha[..., None] + white * (1 - alpha[..., None])).astype(np.uint8))
save_animation(out / "turntable.gif", frames, fps=18)
print(f"wrote {out / 'me.gca'} and {out / 'turntable.gif'}")
