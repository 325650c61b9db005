"""``gramcast export-onnx``: an avatar's cached renderer as an ONNX model."""
from __future__ import annotations

from pathlib import Path

from gramcast.cli.options import output_file

#: A bound on --edge-samples of the command's own: the renderer takes any count (RenderSettings), and each
#: sample is another height lookup of every edge pixel in the exported graph (`gramcast serve` takes 64).
MAX_EDGE_SAMPLES = 256


def register(sub) -> None:
    from gramcast.avatar.layer_hits import EDGE_SAMPLES
    from gramcast.avatar.onnx_export import INPUTS_DOC, OUTPUTS_DOC

    p = sub.add_parser(
        "export-onnx", help="export an avatar's renderer as an ONNX model",
        description=f"Write AVATAR's renderer at one output resolution as an ONNX model (the height fields "
                    f"and textures inside; any batch size) that onnxruntime runs from any language (CPU, or "
                    f"CUDA with onnxruntime-gpu). Input {INPUTS_DOC}. Outputs {OUTPUTS_DOC}. The model's "
                    "metadata (metadata_props) repeats this and records the resolution, the render "
                    "settings, the camera and the avatar's own metadata.")
    p.add_argument("avatar", type=Path, help="avatar file (.gca)")
    p.add_argument("-o", "--out", type=output_file, required=True, help="ONNX model to write (.onnx)")
    p.add_argument("--resolution", type=int, default=256, help="output width and height in pixels (default 256)")
    p.add_argument("--edge-samples", type=int, default=None, metavar="N",
                   help=f"samples of the per-pixel search along occlusion edges: 0 (off: faster, the edges "
                        f"show the 1/4 grid's steps) or 2 to {MAX_EDGE_SAMPLES} (default: {EDGE_SAMPLES} for one-layer "
                        "avatars, off for more)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from gramcast.avatar import Avatar, RenderSettings
    from gramcast.avatar.onnx_export import export_onnx
    from gramcast.cli.avatar_cmd import check_size, check_suffix
    from gramcast.errors import GramcastError
    from gramcast.media_io import check_output_path

    if args.out.is_dir():
        raise GramcastError(f"{args.out} is a folder: give the model's file name, e.g. {args.out / 'avatar.onnx'}")
    check_output_path(args.out)
    check_suffix(args.out, ".onnx", "an ONNX model")
    check_size("--resolution", args.resolution)
    edge = args.edge_samples
    if edge is not None and not (edge == 0 or 2 <= edge <= MAX_EDGE_SAMPLES):   # 1 sample brackets nothing
        raise GramcastError(f"--edge-samples {edge}: give 0 (off) or 2 to {MAX_EDGE_SAMPLES} samples")
    avatar = Avatar.load(args.avatar)
    path = export_onnx(avatar, args.out, resolution=args.resolution,
                       settings=RenderSettings(edge_samples=args.edge_samples))
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB): {avatar.num_layers} layer(s) at {args.resolution}x{args.resolution}, "
          "input 'poses' (batch, 2) yaw/pitch radians -> 'rgb', 'alpha', 'depth'")
    return 0
