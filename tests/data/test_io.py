"""Reading scans and masks: every supported format, every kind of bad input, real files."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from brainviewer.data import io as bio
from brainviewer.data.io import (
    IMAGE_SUFFIXES,
    MIN_SIDE,
    ScanReadError,
    is_mask_name,
    mask_from_array,
    natural_key,
    pair_files,
    read_image,
    read_mask,
    scan_stem_for_mask,
    to_uint8,
)

LOSSLESS = (".png", ".tif", ".tiff", ".webp", ".bmp", ".npy")
PIL_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}


def encode(array: np.ndarray, suffix: str, **kwargs: object) -> bytes:
    """File bytes of ``array`` in the format ``suffix`` names (lossless unless JPEG)."""
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, array, **kwargs)
    elif suffix in (".tif", ".tiff"):
        tifffile.imwrite(buffer, array, **kwargs)
    elif suffix == ".webp":
        Image.fromarray(array).save(buffer, format="WEBP", lossless=True, **kwargs)
    else:
        Image.fromarray(array).save(buffer, format=PIL_FORMAT[suffix], **kwargs)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A syntactically valid PNG that claims ``width x height`` but holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def gray8(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (20, 30), dtype=np.uint8)


@pytest.fixture
def rgb8(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", LOSSLESS)
def test_lossless_gray_and_rgb_round_trip_exactly(suffix: str, gray8: np.ndarray, rgb8: np.ndarray) -> None:
    for array in (gray8, rgb8):
        image = read_image(encode(array, suffix), f"slice{suffix}")
        assert image.dtype == np.uint8
        if suffix == ".webp" and array.ndim == 2:  # WebP has no grayscale mode: stored as equal RGB channels
            array = np.repeat(array[..., None], 3, axis=2)
        assert image.shape == array.shape
        np.testing.assert_array_equal(image, array)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_reads_close_to_the_original(suffix: str) -> None:
    yy, xx = np.mgrid[0:64, 0:96]
    gray = (xx * 2 + yy).astype(np.uint8)  # smooth ramp: JPEG keeps it within a few levels
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    for array in (gray, rgb):
        image = read_image(encode(array, suffix, quality=95), f"slice{suffix}")
        assert image.shape == array.shape and image.dtype == np.uint8
        assert np.abs(image.astype(int) - array.astype(int)).mean() < 3


def test_uppercase_suffix_and_path_source(tmp_path: Path, rgb8: np.ndarray) -> None:
    path = tmp_path / "SLICE_7.PNG"
    path.write_bytes(encode(rgb8, ".png"))
    np.testing.assert_array_equal(read_image(path), rgb8)
    np.testing.assert_array_equal(read_image(str(path)), rgb8)


def test_bytes_like_sources(gray8: np.ndarray) -> None:
    data = encode(gray8, ".png")
    for source in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(read_image(source, "x.png"), gray8)


def test_16bit_gray_png_tiff_npy_keep_their_values() -> None:
    image16 = (np.arange(24 * 40, dtype=np.uint32).reshape(24, 40) * 67 + 300).astype(np.uint16)
    assert image16.max() > 60000  # really uses the upper byte
    for suffix in (".png", ".tif", ".npy"):
        if suffix == ".png":
            buffer = io.BytesIO()
            Image.fromarray(image16).save(buffer, format="PNG")  # mode I;16
            data = buffer.getvalue()
        else:
            data = encode(image16, suffix)
        image = read_image(data, f"scan{suffix}")
        assert image.dtype == np.uint16, suffix
        np.testing.assert_array_equal(image, image16)


def test_16bit_rgb_png_and_tiff_keep_all_16_bits(rng: np.random.Generator) -> None:
    rgb16 = rng.integers(0, 65536, (16, 20, 3), dtype=np.uint16)
    ok, png = cv2.imencode(".png", rgb16[..., ::-1])  # OpenCV writes BGR
    assert ok
    for data, name in ((png.tobytes(), "colour16.png"), (encode(rgb16, ".tif"), "colour16.tif")):
        image = read_image(data, name)
        assert image.dtype == np.uint16
        np.testing.assert_array_equal(image, rgb16)


def test_float_tiff_and_npy_are_float32(rng: np.random.Generator) -> None:
    scan = rng.normal(100, 20, (16, 16)).astype(np.float64)
    for data, name in ((encode(scan.astype(np.float32), ".tif"), "f.tif"), (encode(scan, ".npy"), "f.npy")):
        image = read_image(data, name)
        assert image.dtype == np.float32
        np.testing.assert_allclose(image, scan, rtol=1e-6)


def test_rgba_drops_alpha_and_la_becomes_gray(rgb8: np.ndarray, gray8: np.ndarray) -> None:
    alpha = np.full(rgb8.shape[:2], 7, dtype=np.uint8)  # nearly transparent: values must survive anyway
    rgba = np.dstack([rgb8, alpha])
    for suffix in (".png", ".webp", ".tif", ".npy"):
        image = read_image(encode(rgba, suffix), f"a{suffix}")
        assert image.shape == rgb8.shape, suffix
        np.testing.assert_array_equal(image, rgb8)
    buffer = io.BytesIO()
    Image.fromarray(np.dstack([gray8, alpha]), mode="LA").save(buffer, format="PNG")
    np.testing.assert_array_equal(read_image(buffer.getvalue(), "la.png"), gray8)


def test_palette_png_expands_to_its_colours() -> None:
    indices = np.zeros((12, 10), dtype=np.uint8)
    indices[3:6, 2:8] = 1
    indices[8:, :] = 2
    palette = [0, 0, 0, 200, 10, 20, 30, 40, 250] + [0] * (256 * 3 - 9)
    img = Image.fromarray(indices, mode="P")
    img.putpalette(palette)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    image = read_image(buffer.getvalue(), "palette.png")
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[4, 4], [200, 10, 20])
    np.testing.assert_array_equal(image[9, 0], [30, 40, 250])
    np.testing.assert_array_equal(image[0, 0], [0, 0, 0])
    # A palette mask reads as tumour exactly where the palette colour is not black.
    mask = read_mask(buffer.getvalue(), "palette_mask.png")
    np.testing.assert_array_equal(mask, indices > 0)


def test_palette_and_inverted_tiffs_read_as_displayed() -> None:
    indices = (np.arange(256).reshape(16, 16) % 3).astype(np.uint8)
    colormap = np.zeros((3, 256), np.uint16)  # TIFF colour maps are 16-bit
    colormap[:, 1] = (65535, 0, 0)
    colormap[:, 2] = (0, 0, 65535)
    image = read_image(encode(indices, ".tif", photometric="palette", colormap=colormap), "palette.tif")
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, :3], [[0, 0, 0], [255, 0, 0], [0, 0, 255]])
    stored = np.arange(256, dtype=np.uint8).reshape(16, 16)
    inverted = read_image(encode(stored, ".tif", photometric="miniswhite"), "film.tif")  # 0 means white
    np.testing.assert_array_equal(inverted, 255 - stored)


def test_bilevel_png_reads_as_0_and_255() -> None:
    bits = np.zeros((16, 16), dtype=bool)
    bits[4:9, 5:12] = True
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, format="PNG")  # mode "1"
    image = read_image(buffer.getvalue(), "bits.png")
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, bits.astype(np.uint8) * 255)


def test_channels_first_npy_is_moved_to_channels_last(rgb8: np.ndarray, gray8: np.ndarray) -> None:
    chw = np.ascontiguousarray(np.moveaxis(rgb8, -1, 0))  # (3, 20, 30)
    np.testing.assert_array_equal(read_image(encode(chw, ".npy"), "chw.npy"), rgb8)
    np.testing.assert_array_equal(read_image(encode(gray8[None], ".npy"), "1hw.npy"), gray8)
    np.testing.assert_array_equal(read_image(encode(gray8[..., None], ".npy"), "hw1.npy"), gray8)
    rgba_first = np.concatenate([chw, np.zeros((1, 20, 30), np.uint8)])  # (4, H, W): alpha dropped
    np.testing.assert_array_equal(read_image(encode(rgba_first, ".npy"), "4hw.npy"), rgb8)
    # A singleton batch axis is squeezed: (1, 3, H, W) is one slice.
    np.testing.assert_array_equal(read_image(encode(chw[None], ".npy"), "b.npy"), rgb8)


def test_npy_dtypes_are_normalised(gray8: np.ndarray) -> None:
    as_int32 = read_image(encode(gray8.astype(np.int32) * 200, ".npy"), "i32.npy")
    assert as_int32.dtype == np.uint16
    np.testing.assert_array_equal(as_int32, gray8.astype(np.int32) * 200)
    signed = gray8.astype(np.int16) - 1000  # CT-like negative values
    as_float = read_image(encode(signed, ".npy"), "ct.npy")
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, signed.astype(np.float32))
    as_bool = read_image(encode(gray8 > 128, ".npy"), "b.npy")
    np.testing.assert_array_equal(as_bool, (gray8 > 128).astype(np.uint8) * 255)
    half = read_image(encode(gray8.astype(np.float16), ".npy"), "h.npy")
    assert half.dtype == np.float32


@pytest.mark.parametrize("size", [(MIN_SIDE, MIN_SIDE), (MIN_SIDE, 300), (300, 200), (1024, 1024)])
def test_any_size_in_range_is_accepted(size: tuple[int, int]) -> None:
    array = np.full(size, 9, dtype=np.uint8)
    for suffix in (".png", ".tif", ".npy"):
        image = read_image(encode(array, suffix), f"s{suffix}")
        assert image.shape == size


def test_size_limit_is_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bio, "MAX_PIXELS", 64 * 64)
    exactly = np.zeros((64, 64), dtype=np.uint8)
    one_row_more = np.zeros((65, 64), dtype=np.uint8)
    for suffix in (".png", ".tif", ".jpg", ".webp", ".bmp", ".npy"):
        assert read_image(encode(exactly, suffix), f"ok{suffix}").shape[:2] == (64, 64)
        with pytest.raises(ScanReadError, match="64x65 pixels, more than the 4,096 pixels"):
            read_image(encode(one_row_more, suffix), f"big{suffix}")


# --------------------------------------------------------------------------- bad input


def npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy header claiming ``shape`` (uint8) with no data after it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _object_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, image=np.zeros((16, 16)))
    return buffer.getvalue()


BAD_INPUTS = {
    # id: (bytes, file name, words the message must contain)
    "random-bytes-png": (bytes(range(256)) * 4, "scan.png", "damaged"),
    "random-bytes-jpg": (b"\xff\xd8\xff" + bytes(range(200)), "scan.jpg", "damaged"),
    "random-bytes-tif": (b"II*\x00" + bytes(range(250)), "scan.tif", "damaged"),
    "random-bytes-webp": (b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(50), "scan.webp", "damaged"),
    "random-bytes-bmp": (b"BM" + bytes(range(100)), "scan.bmp", "damaged"),
    "text-renamed-png": (b"Patient notes: no tumour seen.\n" * 10, "notes.png", "not really a .png"),
    "text-renamed-npy": (b"1,2,3\n4,5,6\n", "table.npy", "not a valid NumPy .npy"),
    "empty-png": (b"", "scan.png", "empty (0 bytes)"),
    "empty-npy": (b"", "scan.npy", "empty (0 bytes)"),
    "one-pixel-png": (encode(np.zeros((1, 1), np.uint8), ".png"), "dot.png", "only 1x1 pixels"),
    "thin-tif": (encode(np.zeros((MIN_SIDE - 1, 300), np.uint8), ".tif"), "strip.tif", f"at least {MIN_SIDE}x"),
    "huge-png-header": (png_header_only(9000, 9000), "huge.png", "9000x9000 pixels, more than"),
    "bomb-png-header": (png_header_only(100_000, 100_000), "bomb.png", "too many to open safely"),
    "huge-npy-header": (npy_header_only((100_000, 100_000)), "huge.npy", "shape (100000, 100000), more than"),
    "unsupported-gif": (b"GIF89a" + bytes(30), "scan.gif", "'.gif' files are not supported"),
    "unsupported-dicom": (bytes(200), "IM0001.dcm", "Use one of .tif"),
    "no-suffix": (encode(np.zeros((16, 16), np.uint8), ".png"), "scan", "(no suffix)"),
    "4d-npy": (encode(np.zeros((2, 3, 16, 16), np.uint8), ".npy"), "volume.npy", "shape (2, 3, 16, 16)"),
    "1d-npy": (encode(np.zeros(256, np.uint8), ".npy"), "line.npy", "expected one 2-D slice"),
    "5-channel-npy": (encode(np.zeros((16, 16, 5), np.uint8), ".npy"), "multi.npy", "expected one 2-D slice"),
    "object-npy": (_object_npy(), "objects.npy", "never pickled objects"),
    "complex-npy": (encode(np.zeros((16, 16), np.complex64), ".npy"), "c.npy", "not numbers"),
    "structured-npy": (encode(np.zeros((16, 16), dtype=[("a", "u1"), ("b", "f4")]), ".npy"), "s.npy", "not numbers"),
    "npz-named-npy": (_npz(), "arrays.npy", "not a valid NumPy .npy"),
    "nan-npy": (encode(np.where(np.eye(16) > 0, np.nan, 1.0), ".npy"), "nan.npy", "16 NaN or infinite"),
    "inf-npy": (encode(np.full((16, 16), np.inf, np.float32), ".npy"), "inf.npy", "256 NaN or infinite"),
    "nan-tif": (encode(np.full((16, 16), np.nan, np.float32), ".tif"), "nan.tif", "NaN or infinite"),
    "truncated-png": (
        encode(np.arange(4096).reshape(64, 64).astype(np.uint8), ".png")[:60],
        "t.png",
        "damaged",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_raises_scan_read_error_with_a_clear_message(case: str) -> None:
    data, name, expected = BAD_INPUTS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warnings either
        with pytest.raises(ScanReadError) as info:
            read_image(data, name)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert expected in message, message
    assert name in message, "the message names the file"
    # Masks go through the same reader and fail the same way.
    with pytest.raises(ScanReadError):
        read_mask(data, name)


def test_bad_paths_raise_scan_read_error(tmp_path: Path) -> None:
    with pytest.raises(ScanReadError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    folder = tmp_path / "looks_like.png"
    folder.mkdir()
    with pytest.raises(ScanReadError, match="not a file"):
        read_image(folder)
    text = tmp_path / "readme.txt"
    text.write_text("hello")
    with pytest.raises(ScanReadError, match=r"'\.txt' files are not supported"):
        read_image(text)
    empty = tmp_path / "empty.tif"
    empty.touch()
    with pytest.raises(ScanReadError, match=r"empty\.tif is empty"):
        read_image(empty)


def test_huge_tiff_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(np.zeros((40, 50), np.uint8), ".tif")
    monkeypatch.setattr(bio, "MAX_PIXELS", 1000)
    with pytest.raises(ScanReadError, match="50x40 pixels, more than the 1,000 pixels"):
        read_image(data, "wide.tif")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp", ".bmp", ".npy"])
def test_damaged_files_only_ever_raise_scan_read_error(suffix: str, rng: np.random.Generator) -> None:
    """Fuzz: truncations and byte flips of a valid file either read or raise ScanReadError, nothing else."""
    yy, xx = np.mgrid[0:32, 0:32]
    valid = encode(np.dstack([xx * 8, yy * 8, (xx + yy) * 4]).astype(np.uint8), suffix)
    damaged = [valid[:cut] for cut in np.linspace(1, len(valid) - 1, 12).astype(int)]
    for _ in range(24):
        data = bytearray(valid)
        for pos in rng.integers(0, len(data), 4):
            data[pos] = int(rng.integers(0, 256))
        damaged.append(bytes(data))
    outcomes = {"read": 0, "refused": 0}
    for data in damaged:
        try:
            image = read_image(data, f"fuzz{suffix}")
        except ScanReadError:
            outcomes["refused"] += 1
        else:
            assert image.ndim in (2, 3) and image.dtype in (np.uint8, np.uint16, np.float32)
            outcomes["read"] += 1
    assert outcomes["refused"] >= 1  # truncation to a few bytes can never be read


# --------------------------------------------------------------------------- masks


def test_mask_0_1_and_0_255_give_the_same_mask() -> None:
    truth = np.zeros((24, 24), dtype=bool)
    truth[5:12, 8:20] = True
    for suffix in (".png", ".tif", ".bmp", ".webp", ".npy"):
        for scale in (1, 255):
            mask = read_mask(encode(truth.astype(np.uint8) * scale, suffix), f"m_mask{suffix}")
            assert mask.dtype == bool and mask.shape == (24, 24)
            np.testing.assert_array_equal(mask, truth, err_msg=f"{suffix} x{scale}")
    np.testing.assert_array_equal(read_mask(encode(truth, ".npy"), "b_mask.npy"), truth)
    rgb_red = np.zeros((24, 24, 3), dtype=np.uint8)
    rgb_red[truth] = (255, 0, 0)  # a coloured mask: tumour wherever any channel is set
    np.testing.assert_array_equal(read_mask(encode(rgb_red, ".png"), "red_mask.png"), truth)


def test_empty_mask_is_all_false() -> None:
    for suffix in (".png", ".jpg", ".tif", ".npy"):
        mask = read_mask(encode(np.zeros((16, 20), np.uint8), suffix), f"e_mask{suffix}")
        assert mask.shape == (16, 20) and mask.dtype == bool
        assert not mask.any()


def test_jpeg_noisy_mask_binarises_to_the_drawn_shape() -> None:
    truth = np.zeros((96, 96), dtype=np.uint8)
    cv2.circle(truth, (40, 50), 22, 255, -1)
    data = encode(truth, ".jpg", quality=60)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    noisy_background = (decoded > 0) & (truth == 0)
    assert noisy_background.sum() > 0  # the JPEG really has ringing a "> 0" cut would call tumour
    mask = read_mask(data, "disk_mask.jpg")
    wrong = mask != (truth > 0)
    assert wrong.sum() <= 0.01 * truth.size
    # Any mistake sits on the disk's edge (within 2 px of the true boundary).
    distance_to_edge = np.abs(np.hypot(*np.mgrid[0:96, 0:96] - np.array([50, 40])[:, None, None]) - 22)
    assert np.all(distance_to_edge[wrong] <= 2.0)


def test_mask_from_array_rules() -> None:
    labels = np.array([[0, 1, 2], [0, 0, 3]] * 3, dtype=np.uint8)  # a label map with class ids
    np.testing.assert_array_equal(mask_from_array(labels), labels > 0)
    levels = np.array([[0, 3, 250, 255]] * 2, dtype=np.uint8)  # few values, but lossy: cut at half
    np.testing.assert_array_equal(mask_from_array(levels, lossy=True), levels > 127.5)
    np.testing.assert_array_equal(mask_from_array(levels), levels > 0)
    probs = np.linspace(0, 1, 21, dtype=np.float32).reshape(3, 7)  # many levels: cut at half the max
    np.testing.assert_array_equal(mask_from_array(probs), probs > 0.5)
    assert not mask_from_array(np.full((4, 4), -3.0)).any()
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1, 2] = 255
    np.testing.assert_array_equal(mask_from_array(rgb), [[False, True], [False, False]])


def test_mask_of_another_size_names_both_sizes(tmp_path: Path) -> None:
    data = encode(np.zeros((20, 30), np.uint8), ".png")  # 30 wide, 20 high
    with pytest.raises(ScanReadError) as info:
        read_mask(data, "a_1_mask.png", shape=(256, 128))
    assert "30x20" in str(info.value) and "128x256" in str(info.value)
    assert "a_1_mask.png" in str(info.value)
    # The scan's (H, W, 3) shape is accepted for the check; a matching size passes.
    assert read_mask(data, "a_1_mask.png", shape=(20, 30, 3)).shape == (20, 30)
    with pytest.raises(ScanReadError, match="30x20"):
        read_mask(data, "a_1_mask.png", shape=(30, 20, 3))


# --------------------------------------------------------------------------- display scaling


def test_to_uint8() -> None:
    gray8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_uint8(gray8) is gray8
    ramp16 = (np.arange(100 * 100, dtype=np.int64).reshape(100, 100) * 6).astype(np.uint16)  # 0..59994
    shown = to_uint8(ramp16)
    assert shown.dtype == np.uint8 and shown.shape == ramp16.shape
    assert shown.min() == 0 and shown.max() == 255
    assert np.all(np.diff(shown.ravel().astype(int)) >= 0)  # monotone
    # 0.5 / 99.5 percentiles of 0..59994 in steps of 6 are 299.97 / 59694.03: the middle maps to ~127.5.
    assert abs(int(shown[50, 0]) - round((30000 - 299.97) / (59694.03 - 299.97) * 255)) <= 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for constant in (np.full((8, 8), 1000, np.uint16), np.full((8, 8), 0.25, np.float32), np.zeros((8, 8, 3))):
            out = to_uint8(constant)
            assert out.dtype == np.uint8 and out.shape == constant.shape and not out.any()
        with_nan = np.array([[0.0, 1.0], [np.nan, 0.5]] * 4, dtype=np.float32)
        out = to_uint8(with_nan)
        assert out[1, 0] == 0 and out[0, 1] == 255
        np.testing.assert_array_equal(to_uint8(np.array([[True, False]] * 8)), [[255, 0]] * 8)


# --------------------------------------------------------------------------- names


def test_mask_names_and_natural_order() -> None:
    assert is_mask_name("TCGA_CS_4941_19960909_12_mask.tif")
    assert is_mask_name("a-MASK.PNG")
    assert not is_mask_name("TCGA_CS_4941_19960909_12.tif")
    assert not is_mask_name("mask.png")  # no scan stem in front
    assert scan_stem_for_mask("P_3_mask.webp") == "P_3"
    assert scan_stem_for_mask("P_3.webp") is None
    names = ["s_10", "S_2", "s_1", "s_1b", "t", "10", "²"]
    assert sorted(names, key=natural_key) == ["10", "s_1", "s_1b", "S_2", "s_10", "t", "²"]
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in IMAGE_SUFFIXES)


def test_pair_files_matches_masks_by_name() -> None:
    files = [
        ("P_10.png", b"10"),
        ("P_2_mask.png", b"m2"),
        ("P_2.png", b"2"),
        ("P_10_mask.tif", b"m10"),
        ("Q_1_mask.png", b"orphan"),
        ("P_3.png", b"3"),
    ]
    pairs, orphans = pair_files(files)
    assert [p.scan_name for p in pairs] == ["P_2.png", "P_3.png", "P_10.png"]
    assert [p.mask_name for p in pairs] == ["P_2_mask.png", None, "P_10_mask.tif"]
    assert pairs[2].mask_bytes == b"m10" and pairs[0].scan_bytes == b"2"
    assert orphans == ["Q_1_mask.png"]


# --------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_lgg_tif_slice_and_mask(lgg_root: Path) -> None:
    folder = lgg_root / "kaggle_3m" / "TCGA_CS_4943_20000902"
    scan_path = folder / "TCGA_CS_4943_20000902_16.tif"
    image = read_image(scan_path)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, tifffile.imread(scan_path))
    mask = read_mask(folder / "TCGA_CS_4943_20000902_16_mask.tif", shape=image.shape)
    assert mask.dtype == bool and mask.shape == (256, 256)
    assert mask.sum() == 3011  # counted with tifffile: pixels == 255
    # Tumour where expected: the low-grade glioma is bright on FLAIR (channel 1), ~108 inside the
    # mask against ~36 over the whole head.
    flair = image[..., 1]
    assert flair[mask].mean() > 2 * flair[flair > 0].mean()
    assert not read_mask(folder / "TCGA_CS_4943_20000902_1_mask.tif").any()  # first slice: no tumour


@pytest.mark.data
def test_real_lgg_webp_slice_and_png_mask(lgg_root: Path) -> None:
    folder = lgg_root / "kaggle_3m" / "TCGA_CS_4944_20010208"
    image = read_image(folder / "TCGA_CS_4944_20010208_10.webp")
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.asarray(Image.open(folder / "TCGA_CS_4944_20010208_10.webp")))
    mask = read_mask(folder / "TCGA_CS_4944_20010208_10_mask.png", shape=image.shape[:2])
    assert mask.sum() == 6189  # counted with PIL: pixels == 255
    rows, cols = np.nonzero(mask)
    assert image[rows.mean().round().astype(int), cols.mean().round().astype(int)].max() > 0
    assert not read_mask(folder / "TCGA_CS_4944_20010208_1_mask.png").any()


@pytest.mark.data
def test_real_figshare_png_and_coco_jpeg(figshare_root: Path, coco_root: Path) -> None:
    image = read_image(figshare_root / "images" / "1.png")
    assert image.shape == (512, 512) and image.dtype == np.uint8
    mask = read_mask(figshare_root / "masks" / "1.png", shape=image.shape)
    assert mask.sum() == 4569
    jpeg = next(iter(sorted(coco_root.glob("*.jpg"))))
    photo = read_image(jpeg)
    assert photo.shape == (640, 640, 3) and photo.dtype == np.uint8


# --------------------------------------------------------------------------- decoded-size budget


def _peak_bytes(call) -> int:
    """Peak Python-tracked allocation while ``call()`` runs (NumPy and PIL buffers included)."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
    except ScanReadError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_many_channel_tiff_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small file whose pages decode to more than the budget (here 256x256x64 uint16 = 8 MiB against
    1 MiB) is refused before its pixels are decoded, and the message names the limit and its variable."""
    monkeypatch.setattr(bio, "MAX_DECODED_BYTES", 1 * 1024**2)
    data = encode(np.zeros((256, 256, 64), np.uint16), ".tif", compression="zlib", planarconfig="contig")
    assert len(data) < 200_000
    with pytest.raises(ScanReadError, match=r"would take 8 MiB once decoded .* BRAINVIEWER_MAX_DECODED_MB"):
        read_image(data, "stack.tif")
    assert _peak_bytes(lambda: read_image(data, "stack.tif")) < 2 * 1024**2


def test_png_over_the_decoded_budget_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bio, "MAX_DECODED_BYTES", 100_000)
    data = encode(np.zeros((400, 400, 3), np.uint8), ".png")  # 400x400x3 samples, 2 bytes budgeted for RGB
    with pytest.raises(ScanReadError, match="once decoded"):
        read_image(data, "big.png")
    assert _peak_bytes(lambda: read_image(data, "big.png")) < 300_000
    assert read_image(encode(np.zeros((100, 100), np.uint8), ".png"), "small.png").shape == (100, 100)


def test_npy_over_the_decoded_budget_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bio, "MAX_DECODED_BYTES", 1000)
    with pytest.raises(ScanReadError, match="MiB accepted per scan"):
        read_image(encode(np.zeros((20, 20), np.float32), ".npy"), "f.npy")  # 1,600 bytes


def test_the_default_pixel_budget_refuses_an_8192_square_png() -> None:
    """The 65 KB 8192x8192 PNG that once cost 3 GB is refused from its header."""
    with pytest.raises(ScanReadError, match=r"8192x8192 pixels, more than the 16,777,216 pixels .* BRAINVIEWER_"):
        read_image(png_header_only(8192, 8192), "wide.png")


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from brainviewer.limits import env_limit

    monkeypatch.setenv("BRAINVIEWER_TEST_LIMIT", "2_000")
    assert env_limit("BRAINVIEWER_TEST_LIMIT", 5) == 2000
    for bad in ("", "lots", "0", "-3"):
        monkeypatch.setenv("BRAINVIEWER_TEST_LIMIT", bad)
        assert env_limit("BRAINVIEWER_TEST_LIMIT", 5) == 5


# --- pages, frames and graded masks: the readers say what they did -------------------------------


def _stack_tiff(pages: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.stack(pages), photometric="minisblack")
    return buffer.getvalue()


def _ramp(value: int = 0) -> np.ndarray:
    return (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) + value).astype(np.uint16)


def test_multi_page_tiff_shows_the_first_page_that_is_not_blank_and_says_so() -> None:
    from brainviewer.data.io import read_image_with_notes

    blank = np.zeros((32, 32), np.uint16)
    data = _stack_tiff([blank, blank, _ramp(), _ramp(7), _ramp(9), _ramp(11)])
    info = read_image_with_notes(data, "stack.tif")
    assert (info.page, info.pages) == (2, 6)
    np.testing.assert_array_equal(info.image, _ramp())
    assert info.notes == [
        "stack.tif has 6 pages: page 3 of 6 is shown because pages 1-2 are blank. "
        "One page is reviewed at a time; the Review page's page picker shows another."
    ]
    np.testing.assert_array_equal(read_image(data, "stack.tif"), _ramp())  # same choice, same return type


def test_a_page_can_be_chosen_and_a_missing_one_is_refused() -> None:
    from brainviewer.data.io import read_image_with_notes

    data = _stack_tiff([np.zeros((32, 32), np.uint16), _ramp(), _ramp(5)])
    info = read_image_with_notes(data, "stack.tif", page=0)
    assert info.page == 0 and not info.image.any() and "page 1 of 3 is shown" in info.notes[0]
    np.testing.assert_array_equal(read_image(data, "stack.tif", page=2), _ramp(5))
    with pytest.raises(ScanReadError, match=r"3 page\(s\), so page index 3 \(counted from 0\) does not exist"):
        read_image(data, "stack.tif", page=3)
    with pytest.raises(ScanReadError, match="does not exist"):
        read_image(encode(np.zeros((16, 16), np.uint8), ".png"), "one.png", page=1)


def test_single_page_files_carry_no_notes() -> None:
    from brainviewer.data.io import read_image_with_notes

    for suffix in LOSSLESS:
        info = read_image_with_notes(encode(np.zeros((16, 16), np.uint8), suffix), f"flat{suffix}")
        assert (info.notes, info.page, info.pages) == ([], 0, 1), suffix


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_animated_images_say_which_frame_is_shown(fmt: str) -> None:
    from brainviewer.data.io import read_image_with_notes

    frames = [Image.fromarray(np.full((24, 24), 0, np.uint8))] + [
        Image.fromarray(((np.indices((24, 24)).sum(0) * (k + 1)) % 256).astype(np.uint8)) for k in range(3)
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=40, lossless=True)
    name = "clip.webp" if fmt == "WEBP" else "clip.png"  # a GIF named .png is read by its content
    info = read_image_with_notes(buffer.getvalue(), name)
    assert info.pages == 4 and info.page == 1
    assert info.notes[0].startswith(f"{name} is an animated image: frame 2 of 4 is shown because frame 1 is blank.")
    assert read_image_with_notes(buffer.getvalue(), name, page=3).page == 3


def test_graded_mask_is_binarised_at_half_its_maximum_with_a_note() -> None:
    from brainviewer.data.io import read_mask_with_notes

    graded = np.tile(np.arange(100, dtype=np.uint8), (16, 1))
    info = read_mask_with_notes(encode(graded, ".png"), "g_mask.png", shape=(16, 100))
    np.testing.assert_array_equal(info.image, graded > 49.5)
    np.testing.assert_array_equal(read_mask(encode(graded, ".png"), "g_mask.png"), info.image)
    assert len(info.notes) == 1
    assert (
        "graded mask (0-99, 100 levels)" in info.notes[0] and "binarised at > 49.5, half its maximum" in info.notes[0]
    )
    labels = np.zeros((16, 16), np.uint8)
    labels[4:8, 4:8] = 255
    assert read_mask_with_notes(encode(labels, ".png"), "l_mask.png").notes == []  # a label map: nothing to say
    assert read_mask_with_notes(encode(labels, ".jpg"), "l_mask.jpg").notes == []  # JPEG: the half cut is the rule


def test_multi_page_mask_follows_the_page_asked_for_and_single_page_masks_any_page() -> None:
    from brainviewer.data.io import read_mask_with_notes

    first, second = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    second[3:9, 3:9] = 255
    data = _stack_tiff([first, second])
    assert not read_mask(data, "m_mask.tif").any()  # a blank mask page is an empty mask, never skipped
    assert read_mask(data, "m_mask.tif", page=1).sum() == 36
    assert "page 2 of 2 is shown" in read_mask_with_notes(data, "m_mask.tif", page=1).notes[0]
    assert read_mask(encode(second, ".png"), "s_mask.png", page=4).sum() == 36
