"""Reading scans and masks from files or uploaded bytes.

Everything here is plain NumPy: no Streamlit, no torch.

Conventions
-----------
* A **scan** (``image``) is a ``numpy.ndarray`` of shape ``(H, W)`` (grayscale) or
  ``(H, W, 3)`` (three channels, e.g. the LGG pre-contrast / FLAIR / post-contrast
  slices), dtype ``uint8``, ``uint16`` or ``float32``. Alpha channels are dropped.
* A **mask** is a ``bool`` array of shape ``(H, W)``; ``True`` marks tumour.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from brainviewer.data.naming import UploadPair, is_mask_name, natural_key, pair_files, scan_stem_for_mask  # noqa: F401
from brainviewer.data.pages import ScanInfo, choose_page, graded_mask_note, page_out_of_range
from brainviewer.limits import MIB, env_limit, raise_hint

logger = logging.getLogger(__name__)

#: File suffixes :func:`read_image` understands (lower case, with the dot).
IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".npy")
#: Suffixes of lossy formats: masks stored in them are cut at half their maximum, never at ``> 0``.
LOSSY_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")
#: Environment variable of :data:`MAX_PIXELS`.
MAX_PIXELS_ENV = "BRAINVIEWER_MAX_SCAN_PIXELS"
#: Largest scan accepted, in pixels (default a 4096 x 4096 slice), checked from the file's header
#: before any pixel is decoded. Larger inputs are refused.
MAX_PIXELS = env_limit(MAX_PIXELS_ENV, 4096 * 4096)
#: Environment variable of :data:`MAX_DECODED_BYTES` (in MiB).
MAX_DECODED_ENV = "BRAINVIEWER_MAX_DECODED_MB"
#: Largest decoded scan accepted, in bytes (pixels x channels x bytes per sample; default 192 MiB, which
#: holds a 4096 x 4096 16-bit RGB slice), checked from the header before decoding.
MAX_DECODED_BYTES = env_limit(MAX_DECODED_ENV, 192) * MIB
#: Smallest side accepted; anything smaller cannot be a useful MRI slice.
MIN_SIDE = 8

Image.MAX_IMAGE_PIXELS = max(MAX_PIXELS, 8192 * 8192)  # PIL's own guard, above ours: it raises at twice this


class ScanReadError(ValueError):
    """A file could not be read as a scan or mask. The message says why and what to do."""


def is_supported(name: str | Path) -> bool:
    """True when ``name`` has a suffix in :data:`IMAGE_SUFFIXES`."""
    return Path(str(name)).suffix.lower() in IMAGE_SUFFIXES


def _load_array(
    data: bytes, suffix: str, label: str, page: int | None = None, any_page_if_single: bool = False
) -> ScanInfo:
    """Decode ``data`` (one page of it: ``page``, or the first that is not blank) into a raw array with notes.

    With ``any_page_if_single``, a single-page file is read whatever ``page`` says. Every failure
    becomes a :class:`ScanReadError`.
    """
    if not data:
        raise ScanReadError(f"{label} is empty (0 bytes). Choose the file again; it may not have uploaded.")
    if suffix == ".npy":
        _check_page(label, None if any_page_if_single else page, 1, "page")
        return ScanInfo(_load_npy(data, label))
    if suffix in (".tif", ".tiff"):
        info = _load_tiff(data, label, page, any_page_if_single)
        if info is not None:
            return info
    try:
        # PIL warns about large images (refused explicitly below) and about damaged metadata
        # (logged, not shown: the file is either read or refused with a message).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = _load_with_pil(data, label, page, any_page_if_single)
        for warning in caught:
            logger.debug("reading %s: %s", label, warning.message)
        return info
    except ScanReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ScanReadError(
            f"{label} declares more than {MAX_PIXELS:,} pixels, too many to open safely. "
            "Downsample it or crop to the brain first. " + raise_hint(MAX_PIXELS_ENV)
        ) from err
    except Exception as err:  # PIL raises many kinds (OSError, SyntaxError, struct.error, ...)
        raise ScanReadError(
            f"{label} could not be read as an image: the file is damaged or is not really a "
            f"{suffix or 'picture'} file. Export the slice again as PNG or TIFF."
        ) from err


def _load_with_pil(data: bytes, label: str, page: int | None = None, any_page_if_single: bool = False) -> ScanInfo:
    with Image.open(io.BytesIO(data)) as img:
        count = max(1, int(getattr(img, "n_frames", 1)))
        kind = "frame" if getattr(img, "is_animated", False) and img.format != "TIFF" else "page"
        page = _check_page(label, page, count, kind, any_page_if_single)

        def decode(index: int) -> np.ndarray:
            img.seek(index)
            # The header is read lazily: refuse oversized images before decoding any pixels.
            if img.width * img.height > MAX_PIXELS:
                raise ScanReadError(_too_large(label, (img.height, img.width)))
            _check_decoded(label, (img.height, img.width), len(img.getbands()), _PIL_SAMPLE_BYTES.get(img.mode, 1))
            if count == 1 and img.format == "PNG" and img.mode in ("RGB", "RGBA") and _png_bit_depth(data) == 16:
                return _load_png16_colour(data, label)  # PIL would keep only the top 8 bits
            img.load()
            return _pil_to_array(img)

        array, index, notes = choose_page(count, decode, page, label, kind)
        return ScanInfo(array, notes, index, count)


def _check_page(label: str, page: int | None, count: int, kind: str, any_page_if_single: bool = False) -> int | None:
    """The page to read: refuses an index the file does not have (``None`` lets the reader choose)."""
    if page is None or (any_page_if_single and count == 1):
        return None
    if message := page_out_of_range(label, int(page), count, kind):
        raise ScanReadError(message)
    return int(page)


#: Bytes per sample of PIL modes that use more than one (the rest use one).
_PIL_SAMPLE_BYTES = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4, "RGB": 2, "RGBA": 2}
"""RGB(A) counts 2 bytes a sample: a 16-bit colour PNG opens in PIL as RGB but is decoded at 16 bits."""


def _check_decoded(label: str, shape: Sequence[int], channels: int, sample_bytes: int) -> None:
    """Refuse a scan whose decoded pixels (``H x W x channels x sample_bytes``) exceed :data:`MAX_DECODED_BYTES`."""
    height, width = int(shape[0]), int(shape[1])
    size = height * width * max(1, int(channels)) * max(1, int(sample_bytes))
    if size > MAX_DECODED_BYTES:
        raise ScanReadError(
            f"{label} would take {size / MIB:,.0f} MiB once decoded ({width}x{height} pixels, {channels} "
            f"channel(s), {sample_bytes} byte(s) each), more than the {MAX_DECODED_BYTES / MIB:,.0f} MiB accepted "
            f"per scan. Save one slice with at most 3 channels, downsampled or cropped to the brain. "
            + raise_hint(MAX_DECODED_ENV)
        )


def _png_bit_depth(data: bytes) -> int:
    """Bits per sample from a PNG's IHDR chunk (byte 24), 0 if the header is too short."""
    return data[24] if len(data) > 25 else 0


def _load_png16_colour(data: bytes, label: str) -> np.ndarray:
    """A 16-bit RGB(A) PNG as ``(H, W, 3|4)`` uint16 (OpenCV keeps all 16 bits; PIL does not)."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim != 3:
        raise ScanReadError(f"{label} could not be decoded as a 16-bit colour PNG. Export the slice again.")
    return array[..., [2, 1, 0]] if array.shape[2] == 3 else array[..., [2, 1, 0, 3]]


def _load_npy(data: bytes, label: str) -> np.ndarray:
    """Read a ``.npy`` array, checking its header (dtype, size) before loading any data."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    except Exception as err:
        raise ScanReadError(
            f"{label} is not a valid NumPy .npy file ({err}). Save the slice with numpy.save(path, image)."
        ) from err
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ScanReadError(
            f"{label} holds dtype {dtype}, not numbers; brainviewer only loads numeric arrays (never pickled "
            "objects). Save a numeric slice, e.g. numpy.save(path, image.astype(numpy.float32))."
        )
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_DECODED_BYTES:
        raise ScanReadError(
            f"{label} holds an array of shape {tuple(shape)}, more than the "
            f"{MAX_DECODED_BYTES / MIB:,.0f} MiB accepted per scan ({dtype}). Save one 2-D slice (H, W) or (H, W, 3). "
            + raise_hint(MAX_DECODED_ENV)
        )
    if int(np.prod(shape, dtype=np.int64)) > 4 * MAX_PIXELS:
        raise ScanReadError(
            f"{label} holds an array of shape {tuple(shape)}, more than the {MAX_PIXELS:,} pixels accepted "
            "per slice. Save one 2-D slice (H, W) or (H, W, 3)."
        )
    stream.seek(0)
    try:
        return np.load(stream, allow_pickle=False)
    except Exception as err:
        raise ScanReadError(
            f"{label} is not a valid NumPy .npy array ({err}). Save the slice again with numpy.save(path, image)."
        ) from err


def _load_tiff(data: bytes, label: str, page: int | None = None, any_page_if_single: bool = False) -> ScanInfo | None:
    """One page of a TIFF through tifffile (keeps 16-bit and float data); ``None`` to let PIL try."""
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            count = len(tif.pages)
            if count == 0 or tif.pages[0].photometric == tifffile.PHOTOMETRIC.PALETTE:
                return None  # tifffile returns palette indices; PIL applies the colour map
            page = _check_page(label, page, count, "page", any_page_if_single)

            def decode(index: int) -> np.ndarray:
                tiff_page = tif.pages[index]
                width, height = int(tiff_page.imagewidth), int(tiff_page.imagelength)
                if width * height > MAX_PIXELS:
                    raise ScanReadError(_too_large(label, (height, width)))
                itemsize = np.dtype(tiff_page.dtype).itemsize
                _check_decoded(label, (height, width), int(tiff_page.samplesperpixel), itemsize)
                array = tiff_page.asarray()
                if tiff_page.photometric == tifffile.PHOTOMETRIC.MINISWHITE and array.dtype.kind == "u":
                    array = np.iinfo(array.dtype).max - array  # stored inverted: 0 means white
                return array

            array, index, notes = choose_page(count, decode, page, label, "page")
            return ScanInfo(array, notes, index, count)
    except ScanReadError:
        raise
    except Exception as err:  # tifffile raises many kinds (and needs imagecodecs for some compressions)
        logger.debug("tifffile could not read %s (%s); trying PIL", label, err)
        return None


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(img, dtype=np.uint16)
    if img.mode == "I":
        return np.asarray(img, dtype=np.int32)
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    if img.mode == "LA":
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))  # P, RGBA, CMYK, YCbCr, ...: drop alpha, expand palette


def _too_large(label: str, shape: Sequence[int]) -> str:
    return (
        f"{label} is {shape[1]}x{shape[0]} pixels, more than the {MAX_PIXELS:,} pixels accepted. "
        "Downsample it or crop to the brain first. " + raise_hint(MAX_PIXELS_ENV)
    )


def _as_scan(array: np.ndarray, label: str) -> np.ndarray:
    """Validate and normalise an array's layout to (H, W) or (H, W, 3)."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype.kind not in "uif":
        raise ScanReadError(
            f"{label} has dtype {array.dtype}; a scan must hold numbers (integers or floats). "
            "Save the pixel values themselves."
        )
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # RGBA: drop alpha
    if array.ndim == 3 and array.shape[2] == 2:
        array = array[..., 0]  # gray + alpha
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ScanReadError(
            f"{label} has shape {tuple(array.shape)}; expected one 2-D slice (H, W) or "
            "(H, W, 3). For a volume, open it as a patient (NIfTI or DICOM) instead."
        )
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ScanReadError(
            f"{label} is only {width}x{height} pixels; a slice must be at least "
            f"{MIN_SIDE}x{MIN_SIDE}. Check that you chose the scan, not a thumbnail or icon."
        )
    if height * width > MAX_PIXELS:
        raise ScanReadError(_too_large(label, array.shape))
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ScanReadError(
                f"{label} contains {bad:,} NaN or infinite value(s). Replace them before saving "
                "(e.g. numpy.nan_to_num(image)) so every pixel holds a number."
            )
        array = array.astype(np.float32)
    elif array.dtype not in (np.uint8, np.uint16):
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        array = array.astype(np.uint16) if lo >= 0 and hi <= 65535 else array.astype(np.float32)
    return np.ascontiguousarray(array)


def read_image(source: str | Path | bytes, name: str | None = None, page: int | None = None) -> np.ndarray:
    """Read one scan from a path or from bytes (:func:`read_image_with_notes` also says what was done).

    Args:
        source: a file path, or the file's bytes (then ``name`` gives its suffix).
        name: the file name, used for the suffix and in messages.
        page: 0-based page (multi-page TIFF) or frame (animated GIF/PNG/WebP) to read; by default
            the first that is not blank.

    Returns:
        ``image``: ``(H, W)`` or ``(H, W, 3)``, dtype ``uint8``, ``uint16`` or ``float32``.

    Raises:
        ScanReadError: unreadable, unsupported, too small, too large or wrongly shaped input, or a
            ``page`` the file does not have.
    """
    return read_image_with_notes(source, name, page).image


def read_image_with_notes(source: str | Path | bytes, name: str | None = None, page: int | None = None) -> ScanInfo:
    """Like :func:`read_image`, with notes for the user: which page of a multi-page file (or frame of an
    animated image) is shown and why, and how many there are (:class:`~brainviewer.data.pages.ScanInfo`).
    """
    data, label, suffix = _source_bytes(source, name)
    info = _load_array(data, suffix, label, page)
    info.image = _as_scan(info.image, label)
    return info


def read_mask(
    source: str | Path | bytes, name: str | None = None, shape: tuple[int, ...] | None = None, page: int | None = None
) -> np.ndarray:
    """Read a ground-truth mask as a boolean array (:func:`read_mask_with_notes` also says what was done).

    Values ``> 0`` are tumour for label maps (few distinct values, e.g. {0, 255} or {0, 1});
    for lossy files (JPEG, or any file with many grey levels) the cut is half the maximum,
    so compression noise around the edges is not read as tumour. An all-zero file is an
    empty mask (all ``False``).

    Args:
        source: path or bytes of the mask file.
        name: file name when ``source`` is bytes.
        shape: the scan's ``(H, W)`` (a scan's full ``(H, W, 3)`` shape is accepted too);
            when given, a mask of another size raises.
        page: 0-based page of a multi-page mask (default the first; a blank page is a valid empty
            mask, so none is skipped). A single-page mask is used whatever ``page`` says, so the
            page shown of a multi-page scan can be passed as is.

    Returns:
        ``mask``: ``(H, W)`` bool.

    Raises:
        ScanReadError: unreadable file or a size that differs from ``shape``.
    """
    return read_mask_with_notes(source, name, shape, page).image


def read_mask_with_notes(
    source: str | Path | bytes, name: str | None = None, shape: tuple[int, ...] | None = None, page: int | None = None
) -> ScanInfo:
    """Like :func:`read_mask`, with notes for the user: the page used, and the cut of a graded mask
    (e.g. values 0-99 binarised at > 49.5, half the maximum).
    """
    data, label, suffix = _source_bytes(source, name)
    info = _load_array(data, suffix, label, 0 if page is None else page, any_page_if_single=True)
    array = _as_scan(info.image, label)
    lossy = suffix in LOSSY_SUFFIXES
    info.image = mask_from_array(array, lossy=lossy)
    flat = array.max(axis=2) if array.ndim == 3 else array
    peak = float(flat.max()) if flat.size else 0.0
    if not lossy and peak > 0 and len(np.unique(flat)) > 8:
        info.notes.append(graded_mask_note(label, flat, peak / 2))
    if shape is not None:
        height, width = (int(v) for v in tuple(shape)[:2])
        if info.image.shape != (height, width):
            raise ScanReadError(
                f"{label} is {info.image.shape[1]}x{info.image.shape[0]} (width x height) but its scan is "
                f"{width}x{height}. A mask must have exactly the scan's size: check that it belongs to this scan."
            )
    return info


def mask_from_array(array: np.ndarray, lossy: bool = False) -> np.ndarray:
    """Binarise a label image (``(H, W)`` or ``(H, W, C)``) into a ``(H, W)`` bool mask.

    Label maps (at most 8 distinct values, e.g. {0, 255}, {0, 1} or class ids) are cut at
    ``> 0``. Images with many grey levels, or any image when ``lossy`` (JPEG), are cut at
    half their maximum. An all-zero (or all-negative) image gives an all-``False`` mask.
    """
    array = np.asarray(array)
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.dtype == bool:
        return array.copy()
    peak = float(array.max()) if array.size else 0.0
    if peak <= 0:
        return np.zeros(array.shape, dtype=bool)
    if not lossy and len(np.unique(array)) <= 8:
        return array > 0
    return array > peak / 2


def _source_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str, str]:
    """``(content, label for messages, lower-case suffix)``; checks the suffix before reading anything."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "the uploaded file"
        path = None
    else:
        path = Path(source)
        label = name or path.name
    suffix = Path(label).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ScanReadError(
            f"{label}: '{suffix or '(no suffix)'}' files are not supported. "
            f"Use one of {', '.join(IMAGE_SUFFIXES)} (or open DICOM/NIfTI volumes as a patient)."
        )
    if path is None:
        return bytes(source), label, suffix
    if not path.is_file():
        raise ScanReadError(f"{path} does not exist or is not a file. Check the path.")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ScanReadError(f"{path} could not be read ({err.strerror or err}). Check its permissions.") from err
    return data, label, suffix


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale a scan to ``uint8`` for display (8-bit passes through; others are windowed
    to the 0.5-99.5 percentile range; a constant image becomes all 0; NaN becomes 0).

    Args:
        image: ``(H, W)`` or ``(H, W, 3)``, any numeric (or bool) dtype.

    Returns:
        Same shape, ``uint8``.
    """
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float32)
    finite = np.isfinite(values)
    if values.size and finite.any():
        lo, hi = (float(v) for v in np.percentile(values[finite], [0.5, 99.5]))
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    values = np.where(finite, values, lo)
    return (np.clip((values - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8)
