"""``gramcast export-onnx``: an avatar's cached renderer as an ONNX model."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "export-onnx", help="export an avatar's renderer as an ONNX model",
        description="Write AVATAR's renderer at one output resolution as an ONNX model (the height fields "
                    "and textures inside): input 'poses' (batch, 2) float32 yaw, pitch in radians; outputs "
                    "'rgb' (batch, 3, H, W) in [-1, 1] premultiplied by alpha, 'alpha' and 'depth' "
                    "(batch, 1, H, W). Runs in onnxruntime (CPU, or CUDA with onnxruntime-gpu).")
    p.add_argument("avatar", type=Path, help="avatar file (.gca)")
    p.add_argument("-o", "--out", type=Path, required=True, help="ONNX model to write (.onnx)")
    p.add_argument("--resolution", type=int, default=256, help="output width and height in pixels (default 256)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from gramcast.avatar import Avatar
    from gramcast.avatar.onnx_export import export_onnx
    from gramcast.cli.avatar_cmd import check_size, check_suffix
    from gramcast.errors import GramcastError
    from gramcast.media_io import check_output_path

    if args.out.is_dir():
        raise GramcastError(f"{args.out} is a folder: give the model's file name, e.g. {args.out / 'avatar.onnx'}")
    check_output_path(args.out)
    check_suffix(args.out, ".onnx", "an ONNX model")
    check_size("--resolution", args.resolution)
    avatar = Avatar.load(args.avatar)
    path = export_onnx(avatar, args.out, resolution=args.resolution)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB): {avatar.num_layers} layer(s) at {args.resolution}x{args.resolution}, "
          "input 'poses' (batch, 2) yaw/pitch radians -> 'rgb', 'alpha', 'depth'")
    return 0
