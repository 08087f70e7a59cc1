"""Image decoding and BLIP preprocessing.

Decoding guards against hostile input before any pixel is decompressed: the header's
size is checked against a pixel limit (a small file may claim a huge canvas). Every
mode becomes RGB the way a viewer would show it: EXIF orientation applied, transparency
composited on white, 16-bit and float greyscale scaled to 8 bits, CMYK converted.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageTooLargeError, InvalidImageError

# OpenAI CLIP statistics: BLIP's own and the HF processor's defaults
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_MAX_PIXELS = 64_000_000
# The formats vlserve decodes, and no others: Pillow would otherwise also open FITS, SPIDER,
# DDS, ICNS, PCX, SGI, JPEG 2000 and more, and hand EPS to Ghostscript. (Pillow's JPEG
# opener also reads MPO, the multi-picture JPEG many cameras write.)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def open_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, param: str = "images") -> Image.Image:
    """Bytes -> an unloaded PIL image of an accepted format whose header's size is within
    the limit (nothing is decompressed yet), or a typed error."""
    if not data:
        raise InvalidImageError("image is empty", param=param)
    Image.init()  # registers every plugin once (open only consults those it is given)
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc), param=param) from None
    except UnidentifiedImageError:  # its text names a BytesIO object: of no use to a client
        raise InvalidImageError(f"not an image (or an unsupported format); accepted formats: {', '.join(FORMATS)}",
                                param=param) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"the image could not be read (damaged or truncated?): {exc}", param=param) from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"image has no pixels ({w}x{h})", param=param)
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}", param=param)
    return img


def image_size(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, param: str = "images") -> int:
    """The pixels an encoded image decodes to, from its header (checks format and limit)."""
    w, h = open_image(data, max_pixels=max_pixels, param=param).size
    return w * h


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, param: str = "images") -> Image.Image:
    """Bytes -> RGB PIL image, or a typed error."""
    img = open_image(data, max_pixels=max_pixels, param=param)
    try:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc), param=param) from None
    except Exception as exc:  # truncated data, broken codec streams
        raise InvalidImageError(f"cannot decode image: {exc}", param=param) from None


def to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit data spans 0..65535; float data is taken as 0..1 when it fits there
        scale = 255.0 / 65535.0 if mode != "F" or arr.max(initial=0) > 1.0 else 255.0
        if mode == "I" and arr.max(initial=0) <= 255:
            scale = 1.0
        arr = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return img.convert("RGB")


def image_processor_config(folder: Path) -> dict:
    """The image processor's settings: preprocessor_config.json (transformers 4), or the
    `image_processor` entry of processor_config.json (what transformers 5 writes)."""
    legacy, combined = folder / "preprocessor_config.json", folder / "processor_config.json"
    if legacy.is_file():
        return json.loads(legacy.read_text())
    if combined.is_file():
        return json.loads(combined.read_text()).get("image_processor") or {}
    return {}


@dataclass(frozen=True)
class ImageProcessor:
    """Squash-resize (bicubic) to the model's size, rescale, normalise."""

    size: int = 384
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255

    @classmethod
    def from_folder(cls, folder: str | Path, image_size: int) -> "ImageProcessor":
        cfg = image_processor_config(Path(folder))
        size = cfg.get("size", image_size)
        if isinstance(size, dict):
            size = size.get("height", size.get("shortest_edge", image_size))
        return cls(size=int(size),
                   mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
                   std=tuple(cfg.get("image_std", CLIP_STD)),
                   rescale_factor=float(cfg.get("rescale_factor", 1 / 255)))

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> float32 pixels (B, 3, size, size)."""
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        for i, img in enumerate(images):
            img = to_rgb(img)
            if img.size != (self.size, self.size):
                img = img.resize((self.size, self.size), resample=Image.Resampling.BICUBIC)
            arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())  # (H, W, 3)
            out[i] = (arr.permute(2, 0, 1) * self.rescale_factor - mean) / std  # (3, H, W)
        return out


@dataclass(frozen=True)
class CropProcessor:
    """open_clip's eval transform: resize the shorter side to `size` (bicubic; kept when it
    already fits), centre crop, rescale by 1/255, normalise; or `squash` to size x size.
    Sizes and crop offsets are computed as torchvision does (int() of the long side,
    round() of the offsets), so the pixels equal open_clip's for RGB images."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    resize_mode: str = "shortest"  # shortest | squash
    interpolation: str = "bicubic"  # bicubic | bilinear

    def __post_init__(self):
        if self.resize_mode not in ("shortest", "squash") or self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"preprocessing resize_mode={self.resize_mode!r} interpolation={self.interpolation!r} "
                             "is not served (shortest or squash; bicubic or bilinear)")

    def _fit(self, img: Image.Image) -> Image.Image:
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        s, (w, h) = self.size, img.size
        if self.resize_mode == "squash":
            return img if (w, h) == (s, s) else img.resize((s, s), resample=resample)
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = s, int(s * long / short)
        new = (new_short, new_long) if w <= h else (new_long, new_short)
        if new != (w, h):
            img = img.resize(new, resample=resample)
        left, top = int(round((new[0] - s) / 2.0)), int(round((new[1] - s) / 2.0))
        return img.crop((left, top, left + s, top + s))

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images -> float32 pixels (B, 3, size, size)."""
        out = torch.empty((len(images), 3, self.size, self.size), dtype=torch.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        for i, img in enumerate(images):
            arr = torch.from_numpy(np.asarray(self._fit(to_rgb(img)), dtype=np.uint8).copy())  # (H, W, 3)
            out[i] = (arr.permute(2, 0, 1).float().div(255) - mean) / std  # (3, H, W), as ToTensor + Normalize
        return out
