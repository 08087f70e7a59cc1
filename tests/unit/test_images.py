"""Image decoding: every mode to RGB, EXIF orientation, hostile input; preprocessing parity."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vlserve.engine.images import ImageProcessor, decode_image
from vlserve.errors import ImageTooLargeError, InvalidImageError


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (the pixel data is a few bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_garbage_bytes():
    with pytest.raises(InvalidImageError, match=r"not an image \(or an unsupported format\); accepted formats") as e:
        decode_image(b"definitely not an image")
    assert "BytesIO" not in str(e.value)


def test_empty_bytes():
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")


def test_zero_size_image():
    with pytest.raises(InvalidImageError):
        decode_image(png_header_only(0, 0))


def test_decompression_bomb_is_refused_before_decoding():
    data = png_header_only(100_000, 100_000)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match="limit"):
        decode_image(data, max_pixels=10_000_000)


def test_truncated_file():
    data = encode(Image.new("RGB", (64, 64), (10, 20, 30)), "JPEG")
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 3])


def test_error_names_the_parameter():
    with pytest.raises(InvalidImageError) as err:
        decode_image(b"xx", param="images[3]")
    assert err.value.param == "images[3]"


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (20, 10), (200, 0, 0))
    img.putpixel((0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(img, "JPEG", exif=exif, quality=100))
    assert out.size == (10, 20)


def rgb_at(data: bytes, xy=(0, 0)):
    return decode_image(data).getpixel(xy)


def test_rgba_transparency_composites_on_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((1, 1), (0, 0, 255, 255))
    assert rgb_at(encode(img)) == (255, 255, 255)
    assert rgb_at(encode(img), (1, 1)) == (0, 0, 255)


def test_half_transparent_blends():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    r, g, b = rgb_at(encode(img))
    assert 120 <= r <= 130 and r == g == b


def test_palette_with_transparency():
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 1), 1)
    data = encode(img, transparency=0)
    assert rgb_at(data) == (255, 255, 255) and rgb_at(data, (1, 1)) == (0, 255, 0)


@pytest.mark.parametrize("mode,value,expected", [
    ("L", 77, (77, 77, 77)),
    ("LA", (77, 255), (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
])
def test_grey_modes(mode, value, expected):
    assert rgb_at(encode(Image.new(mode, (3, 3), value))) == expected


def test_cmyk():
    img = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = rgb_at(encode(img, "JPEG", quality=100))
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.full((4, 4), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    img = Image.fromarray(arr)
    assert img.mode.startswith("I")
    r, g, b = rgb_at(encode(img))
    assert 126 <= r <= 129 and r == g == b


def test_preprocessing_matches_transformers():
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (57, 83, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))]
    ref = transformers.BlipImageProcessorPil(size={"height": 40, "width": 40})(
        images=images, return_tensors="pt")["pixel_values"]
    ours = ImageProcessor(size=40)(images)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-5
