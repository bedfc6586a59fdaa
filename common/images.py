"""Decoding, validation and resizing of input images; encoding of output images.

The API validates with :func:`inspect_image` before a job exists; the worker decodes
the same bytes with :func:`decode_rgb`. Both apply the same limits, so an image the
API accepted is one the worker can decode.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from m2fp_contract.errors import ErrorCode, InvalidImage

# Our own limits run first; this only stops Pillow from warning about them.
Image.MAX_IMAGE_PIXELS = None


# The largest label map decided at its own size (worker.engine.decision_size): 2 megapixels.
DEFAULT_LABELS_MAX_PIXELS = 2_000_000


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_side: int


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    mode: str


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open ``data`` lazily and check its header size against the limits."""
    if not data:
        raise InvalidImage("the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("not a decodable image (JPEG, PNG, WebP, BMP, TIFF or GIF expected)") from None
    except (OSError, ValueError) as exc:
        raise InvalidImage(f"not a decodable image: {exc}") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage("the image has no pixels")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise InvalidImage(
            f"image is {width}x{height}; the limits are {limits.max_side} px per side "
            f"and {limits.max_pixels} pixels in all",
            code=ErrorCode.IMAGE_TOO_LARGE,
        )
    return image


def _load_upright(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str]:
    """Fully decode (catching truncated and corrupt files) and apply EXIF orientation."""
    image = _open(data, limits)
    source_format = image.format or "unknown"
    try:
        image.load()
        return ImageOps.exif_transpose(image), source_format
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"the image data is corrupt or truncated: {exc}") from None


def inspect_image(data: bytes, limits: ImageLimits) -> ImageInfo:
    """Fully decode ``data`` once and describe it, or raise :class:`InvalidImage`."""
    image, source_format = _load_upright(data, limits)
    return ImageInfo(image.width, image.height, source_format, image.mode)


def decode_rgb(data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode to an upright ``(H, W, 3)`` uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float inputs
    are converted; transparent pixels are composited over white, since a parser
    sees only color and black under transparency would read as dark clothing.
    """
    return to_rgb(_load_upright(data, limits)[0])


def to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow image mode to ``(H, W, 3)`` uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.int64)
        scale = 257.0 if wide.max(initial=0) > 255 else 1.0
        gray = np.clip(wide / scale, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        gray = ((values - low) / (high - low or 1.0) * 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def inference_size(width: int, height: int, short_side: int, max_side: int) -> tuple[int, int]:
    """Size ``(w, h)`` to run the model at: short side ``short_side``, long side at most ``max_side``.

    This is the resize rule of the stock M2FP pipeline (640 / 1333), with the long-side
    bound made configurable; aspect ratio is kept and both sides are at least 1.
    """
    scale = short_side / min(width, height)
    if max(width, height) * scale > max_side:
        scale = max_side / max(width, height)
    return max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an RGB array to ``size`` = ``(w, h)``."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map, so no new class ids appear."""
    if (labels.shape[1], labels.shape[0]) == size:
        return labels
    return np.asarray(Image.fromarray(labels).resize(size, Image.NEAREST))


def encode_png(array: np.ndarray, palette: Optional[np.ndarray] = None) -> bytes:
    """A PNG of ``array``; with ``palette`` (``(n, 3)`` uint8), 8-bit palette mode: each
    pixel keeps its value (a class id) and viewers show the palette's color."""
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P") if image.mode != "P" else image
        image.putpalette(palette.astype(np.uint8).ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
