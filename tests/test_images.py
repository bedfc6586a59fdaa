"""Input decoding, limits and the resize policy."""
import numpy as np
import pytest
from PIL import Image

from m2fp_contract.errors import ErrorCode, InvalidImage
from common.images import ImageLimits, decode_rgb, inference_size, inspect_image, resize_labels
from scripts.imagegen import encode, photo, photo_jpeg

LIMITS = ImageLimits(max_pixels=4_000_000, max_side=4000)


def test_jpeg_decodes_to_rgb_uint8():
    rgb = decode_rgb(photo_jpeg(64, 48), LIMITS)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8


def test_exif_orientation_is_applied():
    data = encode(photo(40, 20), "JPEG", exif_orientation=6)  # stored landscape, shown portrait
    assert decode_rgb(data, LIMITS).shape[:2] == (40, 20)
    info = inspect_image(data, LIMITS)
    assert (info.width, info.height, info.format) == (20, 40, "JPEG")


def test_grayscale_is_converted_to_three_equal_channels():
    gray = Image.fromarray(np.full((10, 12), 77, np.uint8), mode="L")
    rgb = decode_rgb(encode(gray, "PNG"), LIMITS)
    assert rgb.shape == (10, 12, 3) and (rgb == 77).all()


def test_rgba_transparency_becomes_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (200, 10, 10, 255)  # opaque red top half, transparent bottom half
    rgb = decode_rgb(encode(Image.fromarray(rgba, "RGBA"), "PNG"), LIMITS)
    assert tuple(rgb[0, 0]) == (200, 10, 10)
    assert tuple(rgb[7, 7]) == (255, 255, 255)


def test_cmyk_jpeg_is_converted():
    cmyk = Image.new("CMYK", (16, 9), (0, 255, 255, 0))  # pure red in CMYK
    rgb = decode_rgb(encode(cmyk, "JPEG"), LIMITS)
    assert rgb.shape == (9, 16, 3)
    assert rgb[..., 0].mean() > 200 and rgb[..., 1].mean() < 60


def test_sixteen_bit_png_is_scaled_not_clipped():
    wide = np.full((6, 5), 65535, np.uint16)
    wide[0, 0] = 0
    rgb = decode_rgb(encode(Image.fromarray(wide), "PNG"), LIMITS)
    assert rgb[1, 1].tolist() == [255, 255, 255] and rgb[0, 0].tolist() == [0, 0, 0]
    mid = np.full((2, 2), 32896, np.uint16)  # 128 * 257
    assert decode_rgb(encode(Image.fromarray(mid), "PNG"), LIMITS)[0, 0, 0] == 128


@pytest.mark.parametrize("data", [b"", b"not an image at all", photo_jpeg(64, 48)[:300]])
def test_corrupt_or_truncated_input_is_invalid(data):
    with pytest.raises(InvalidImage) as raised:
        inspect_image(data, LIMITS)
    assert raised.value.code is ErrorCode.INVALID_IMAGE


def test_pixel_and_side_limits_are_checked_from_the_header():
    big = encode(np.zeros((300, 200, 3), np.uint8), "PNG")
    with pytest.raises(InvalidImage) as raised:
        inspect_image(big, ImageLimits(max_pixels=50_000, max_side=4000))
    assert raised.value.code is ErrorCode.IMAGE_TOO_LARGE
    with pytest.raises(InvalidImage):
        inspect_image(big, ImageLimits(max_pixels=10**9, max_side=250))


@pytest.mark.parametrize("size, max_side, expected", [
    ((640, 480), 1333, (853, 640)),    # short side to 640, as the stock pipeline does
    ((480, 640), 1333, (640, 853)),
    ((4000, 1000), 1333, (1333, 333)),  # long side capped
    ((100, 100), 1333, (640, 640)),     # small images are scaled up like the stock pipeline
    ((3000, 2000), 512, (512, 341)),    # a lower configured limit wins
    ((5000, 1), 1333, (1333, 1)),       # never a zero-pixel side
])
def test_inference_size_policy(size, max_side, expected):
    assert inference_size(*size, short_side=640, max_side=max_side) == expected


def test_label_resize_is_nearest_and_adds_no_classes():
    labels = np.array([[0, 3], [7, 19]], np.uint8)
    big = resize_labels(labels, (40, 30))
    assert big.shape == (30, 40)
    assert set(np.unique(big)) == {0, 3, 7, 19}
    # each source pixel becomes one solid block (no blended ids at the seams)
    assert [np.unique(block).tolist() for block in (big[:15, :20], big[:15, 20:], big[15:, :20], big[15:, 20:])] == [
        [0], [3], [7], [19]]
