"""The Python API's edges: unwritable outputs, huge or odd image inputs, the renderer's arguments, and the
errors a caller catches, each refused with a gramcast error that names what was wrong and what to do."""
import io
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gramcast
from gramcast import errors
from gramcast.avatar import Avatar, Renderer
from gramcast.errors import GramcastError, InvalidArgumentError, InvalidImageError, OutputPathError
from gramcast.images import MAX_PIXELS, load_image

PHOTO = sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))[0]


def _tiny_avatar() -> Avatar:
    g = torch.linspace(0, 1, 8)
    return Avatar(heights=torch.zeros(2, 8, 8) + g[:, None] * 0.01,
                  textures=torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)),
                  extent=0.14, meta={"method": "test"})


# ---------------------------------------------------------------- saving where nothing can be written
def _chattr(flag: str, path: Path) -> bool:
    """Set or clear the immutable attribute, which stops writes even by root; False where the file system or
    the process cannot (then the caller skips)."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_saving_over_a_protected_file_names_the_users_path_and_leaves_nothing(tmp_path):
    target = tmp_path / "locked.gca"
    target.write_bytes(b"old")
    if not _chattr("+i", target):
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(OutputPathError) as caught:
            _tiny_avatar().save(target)
    finally:
        _chattr("-i", target)
    msg = str(caught.value)
    assert f"cannot write {target}:" in msg and "cannot be replaced" in msg and ".locked." not in msg, msg
    assert [p.name for p in tmp_path.iterdir()] == ["locked.gca"] and target.read_bytes() == b"old"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs here")
def test_saving_where_the_folder_takes_no_files_despite_its_permissions():
    """sysfs answers access(W_OK) yes for root yet refuses new files: only the write itself finds out."""
    with pytest.raises(OutputPathError) as caught:
        _tiny_avatar().save("/sys/x.gca")
    msg = str(caught.value)
    assert msg.startswith("cannot write /sys/x.gca:") and "/sys/.x." not in msg and "elsewhere" in msg, msg
    assert not any(p.name.startswith(".x.") for p in Path("/sys").iterdir())


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs here")
def test_every_atomic_writer_says_it_of_the_users_path():
    """Images, animations and any file go through the same atomic writer as avatars."""
    from gramcast.media_io import save_animation, save_image

    frame = np.zeros((16, 16, 3), np.uint8)
    for write, path in ((lambda p: save_image(p, frame), "/sys/x.png"),
                        (lambda p: save_animation(p, [frame, frame], fps=2), "/sys/x.gif")):
        with pytest.raises(OutputPathError, match=f"^cannot write {path}: "):
            write(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_saving_into_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match=f"cannot write {ro / 'me.gca'}: .*read-only"):
            _tiny_avatar().save(ro / "me.gca")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_saving_into_a_missing_folder(tmp_path):
    with pytest.raises(OutputPathError, match=f"cannot write {tmp_path / 'nope' / 'me.gca'}: folder .* does not exist"):
        _tiny_avatar().save(tmp_path / "nope" / "me.gca")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs here")
def test_the_cli_exits_2_with_one_line_where_the_avatar_cannot_be_saved(capsys):
    from gramcast.cli import main

    sample = Path(__file__).resolve().parents[1] / "sdk" / "assets" / "sample_portrait.png"
    assert main(["enroll", str(sample), "-o", "/sys/x.gca"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gramcast enroll:")]
    assert len(err) == 1 and err[0].startswith("gramcast enroll: error: cannot write /sys/x.gca: folder /sys "), err


# ---------------------------------------------------------------- images beyond the pixel limit
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (1 bit a pixel) over a few bytes of image data: what
    the size check sees, without the memory or time a real image that large would take."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_an_image_beyond_the_limit_is_refused_in_gramcasts_words_before_decoding(tmp_path):
    pillow_limit = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(20000, 15000))          # 300 MP; Pillow alone refuses above ~179 MP
    with pytest.raises(InvalidImageError) as caught:
        load_image(path)
    msg = str(caught.value)
    assert msg == (f"{path} is 20000x15000 pixels, beyond the {MAX_PIXELS // 1_000_000} megapixel limit: "
                   "downscale it first"), msg
    assert Image.MAX_IMAGE_PIXELS == pillow_limit        # Pillow's guard is back for everyone else


def test_an_image_within_the_limit_is_not_refused_as_a_bomb():
    # 192 MP: within gramcast's limit, beyond Pillow's; its pixels (a few bytes here) are what fails
    with pytest.raises(InvalidImageError) as caught:
        load_image(_png_header(16000, 12000))
    msg = str(caught.value)
    assert "damaged or truncated" in msg and "megapixel" not in msg and "bomb" not in msg, msg


# ---------------------------------------------------------------- what load_image takes
@pytest.fixture(scope="module")
def rgb():
    return load_image(PHOTO)


def test_binary_file_objects_load_like_their_bytes(rgb):
    assert (load_image(io.BytesIO(PHOTO.read_bytes())) == rgb).all()
    with open(PHOTO, "rb") as fh:
        assert (load_image(fh) == rgb).all()
    with open(PHOTO, encoding="latin-1") as fh, pytest.raises(InvalidImageError, match=r"text: .*'rb'"):
        load_image(fh)
    with pytest.raises(InvalidImageError, match="is empty"):
        load_image(io.BytesIO(b""))


@pytest.mark.parametrize("src", [None, 5, [1, 2, 3], object()])
def test_other_inputs_say_what_load_image_takes(src):
    with pytest.raises(InvalidImageError, match=r"cannot load an image from .*: pass a file path, the file's bytes, "
                                                r"a binary file object .*a PIL image, or an \(H, W, 3\)"):
        load_image(src)


def test_enroll_refuses_none_with_what_it_takes():
    with pytest.raises(InvalidImageError, match="from None: pass a file path"):
        gramcast.enroll(None)


def test_arrays_of_every_layout_or_a_clear_refusal(rgb):
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    rgba[:100, :, 3] = 0
    out = load_image(rgba)                                          # alpha composited over white
    assert out.shape == rgb.shape and (out[:100] == 255).all() and (out[100:] == rgb[100:]).all()
    grey = rgb[..., 1]
    for g in (grey, grey[..., None]):
        out = load_image(g)
        assert out.shape == rgb.shape and all((out[..., c] == grey).all() for c in range(3))
    with pytest.raises(InvalidImageError, match=r"channels first \(C, H, W\).*transpose\(1, 2, 0\)"):
        load_image(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    with pytest.raises(InvalidImageError, match=r"float in \[0, 1\]; got float32 from [0-9.]+ to [0-9.]+: scale"):
        load_image(rgb.astype(np.float32))
    nan = rgb.astype(np.float32) / 255.0
    nan[0, 0, 0] = np.nan
    with pytest.raises(InvalidImageError, match=r"float in \[0, 1\]; got float32 with NaN or infinite values"):
        load_image(nan)
    with pytest.raises(InvalidImageError, match="uint8, uint16 or float in .*; got int64"):
        load_image(rgb.astype(np.int64))


# ---------------------------------------------------------------- the renderer's arguments
def test_a_renderer_takes_a_gca_path(tmp_path):
    avatar = _tiny_avatar()
    avatar.save(tmp_path / "me.gca")
    want = Renderer(Avatar.load(tmp_path / "me.gca"), device="cpu").render([(0.2, 0.0)], 32).rgb
    for path in (tmp_path / "me.gca", str(tmp_path / "me.gca")):
        assert torch.equal(gramcast.Renderer(path, device="cpu").render([(0.2, 0.0)], 32).rgb, want)
    with pytest.raises(errors.AvatarFormatError, match="does not exist"):
        Renderer(tmp_path / "missing.gca", device="cpu")


@pytest.mark.parametrize("kwargs,match", [
    ({"avatar": object()}, "takes an Avatar or the path of a .gca file, got builtins.object"),
    ({"avatar": np.zeros((8, 8))}, "takes an Avatar or the path of a .gca file, got numpy.ndarray"),
    ({"backend": "bogus"}, "unknown backend 'bogus'"),
    ({"device": "banana"}, "'banana' is not a device: use auto, cpu, cuda, cuda:N or mps"),
    ({"device": "gpu"}, "'gpu' is not a device: use auto, cpu, cuda"),
    ({"device": "xpu"}, "gramcast runs on cpu, cuda or mps devices"),
    ({"compositing": "bogus"}, "unknown compositing 'bogus'"),
    ({"settings": {"edge_samples": 0}}, "settings must be a gramcast.RenderSettings"),
])
def test_bad_renderer_arguments_are_one_kind_of_error(kwargs, match):
    kwargs = {"avatar": _tiny_avatar(), "device": "cpu", **kwargs}
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        Renderer(**kwargs)
    assert isinstance(caught.value, GramcastError) and isinstance(caught.value, ValueError)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an Apple GPU")
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_device_this_machine_lacks_is_refused_on_either_back_end(backend):
    with pytest.raises(InvalidArgumentError, match="no Apple GPU"):
        Renderer(_tiny_avatar(), device="mps", backend=backend)      # onnx had quietly used the CPU


def test_rendering_no_poses_says_so():
    with pytest.raises(ValueError, match="no poses given"):
        Renderer(_tiny_avatar(), device="cpu").render([], 32)


def test_an_inconsistent_avatar_is_the_same_kind_of_error():
    with pytest.raises(InvalidArgumentError, match="invalid avatar: heights must be"):
        Avatar(torch.zeros(8, 8), torch.zeros(1, 4, 8, 8), 0.1)


# ---------------------------------------------------------------- the errors a caller catches
def test_every_error_class_is_exported_from_the_package():
    classes = {n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, GramcastError)}
    assert classes >= {"GramcastError", "FaceTurnedError", "MultipleFacesError", "InvalidImageError",
                       "OutputPathError", "InvalidArgumentError"}
    for name in classes:
        assert getattr(gramcast, name) is getattr(errors, name) and name in gramcast.__all__, name
    assert set(errors.__all__) == classes
    namespace: dict = {}
    exec("from gramcast import *", namespace)
    assert all(name in namespace for name in classes)


@pytest.mark.parametrize("kwargs", [dict(max_yaw=float("nan")), dict(max_yaw=-1.0), dict(max_yaw=4.0),
                                    dict(min_eye_distance=0), dict(min_eye_distance=float("nan"))])
def test_enroll_refuses_limits_that_would_switch_its_checks_off_or_make_no_sense(kwargs):
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        gramcast.enroll(np.zeros((64, 64, 3), np.uint8), **kwargs)
