"""Every kind of selfie file becomes RGB uint8, or a clear InvalidImageError."""
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gramcast.errors import InvalidImageError
from gramcast.images import load_image

PHOTO = sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))[0]


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb():
    return load_image(PHOTO)


def test_real_photo_loads_as_rgb(rgb):
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.shape[:2] == (512, 512)


def test_grayscale_cmyk_and_palette_convert(rgb):
    pil = Image.fromarray(rgb)
    gray = load_image(encode(pil.convert("L"), "PNG"))
    assert gray.shape == rgb.shape and (gray[..., 0] == gray[..., 1]).all()
    cmyk = load_image(encode(pil.convert("CMYK"), "JPEG", quality=95))
    assert np.abs(cmyk.astype(int) - rgb.astype(int)).mean() < 12
    pal = load_image(encode(pil.quantize(256), "PNG"))  # adaptive palette
    assert np.abs(pal.astype(int) - rgb.astype(int)).mean() < 12


def test_sixteen_bit_scales_to_eight(rgb):
    gray16 = (rgb[..., 0].astype(np.uint16) * 257)
    out = load_image(encode(Image.fromarray(gray16), "PNG"))
    assert np.abs(out[..., 0].astype(int) - rgb[..., 0].astype(int)).max() <= 1


def test_alpha_is_composited_over_white(rgb):
    rgba = np.concatenate([rgb, np.zeros(rgb.shape[:2] + (1,), np.uint8)], axis=2)
    rgba[:256, :, 3] = 255
    out = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out[:256] == rgb[:256]).all() and (out[256:] == 255).all()


def test_exif_rotation_is_applied(rgb):
    img = Image.fromarray(rgb[:, :300])              # 512 x 300, portrait
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90 CW to display"
    out = load_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.shape[:2] == (300, 512)


def test_huge_images_are_downscaled(rgb):
    big = Image.fromarray(rgb).resize((6000, 6000))
    out = load_image(encode(big, "PNG", compress_level=1), max_side=1024)
    assert out.shape == (1024, 1024, 3)


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (b"definitely not an image", "not an image"),
    (PHOTO.read_bytes()[:4000], "damaged or truncated"),
])
def test_bad_files_say_what_is_wrong(data, match):
    with pytest.raises(InvalidImageError, match=match):
        load_image(data)


def test_missing_paths_and_folders(tmp_path):
    with pytest.raises(InvalidImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InvalidImageError, match="folder"):
        load_image(tmp_path)


def test_arrays(rgb):
    assert (load_image(rgb) == rgb).all()
    assert load_image(rgb[..., 0]).shape == rgb.shape
    assert (load_image(rgb.astype(np.float32) / 255.0) == rgb).all()
    with pytest.raises(InvalidImageError, match="uint8, uint16 or float"):
        load_image(rgb.astype(np.float32))          # floats outside [0, 1]
    with pytest.raises(InvalidImageError):
        load_image(np.zeros((4, 4, 2), np.uint8))


def test_heic_photos_load_upright_like_jpegs(rgb):
    """HEIC, an iPhone's default format: decoded to the same picture (within the codecs' loss), with its
    EXIF orientation applied as for a JPEG."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    img = Image.fromarray(rgb[:, :300])                          # 512 x 300, portrait
    heic = encode(img, "HEIF", quality=95)
    assert heic[4:12] == b"ftypheic"                             # a real HEIC container, not a re-labelled PNG
    out = load_image(heic)
    assert out.shape == (512, 300, 3) and np.abs(out.astype(int) - rgb[:, :300].astype(int)).mean() < 4
    exif = Image.Exif()
    exif[0x0112] = 6                                             # "rotate 90 CW to display"
    turned = load_image(encode(img, "HEIF", quality=95, exif=exif.tobytes()))
    upright = load_image(encode(img, "JPEG", quality=95, exif=exif))
    assert turned.shape == upright.shape == (300, 512, 3)
    assert np.abs(turned.astype(int) - upright.astype(int)).mean() < 6
