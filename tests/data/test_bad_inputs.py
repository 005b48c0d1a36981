"""A corpus of bad and tricky uploads, run through every reader in one subprocess.

Each file is generated here (nothing is downloaded): damaged and truncated images, wrong suffixes,
headers that declare huge images, 64-channel and multi-page TIFFs, animated images, graded masks,
NaN pixels, 1x1 images, object arrays, and zip / gzip bombs and garbage for the volume readers.

Every case must end in the project's own error (:class:`~brainviewer.data.io.ScanReadError`,
:class:`~brainviewer.data.volumes.VolumeError`) or be handled; none may crash with another exception,
take more than :data:`MAX_SECONDS_PER_CASE`, or push the reader process past :data:`MAX_RSS_BYTES`.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

#: Peak resident memory of the reader process, all cases together.
MAX_RSS_BYTES = 1536 * 1024 * 1024
#: Longest any single case may take.
MAX_SECONDS_PER_CASE = 20.0
#: Longest the whole corpus may take (the subprocess is killed after this).
MAX_SECONDS_TOTAL = 150

ROOT = Path(__file__).resolve().parents[2]
_RNG = np.random.default_rng(7)


# --- generators -----------------------------------------------------------------------------------


def _encode(array: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    """``array`` saved by PIL as ``fmt`` (``PNG``, ``JPEG``, ``WEBP``, ``BMP``, ``TIFF``, ``GIF``)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _tiff(array: np.ndarray | None = None, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _scan(size: int = 64) -> np.ndarray:
    return _RNG.integers(0, 255, (size, size), dtype=np.uint8)


def _animated(fmt: str, frames: int = 12) -> bytes:
    images = [Image.fromarray(_scan(48)) for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, save_all=True, append_images=images[1:], duration=50, loop=0)
    return buffer.getvalue()


def _png_header_only(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG whose IHDR declares ``width x height`` pixels, with a tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b"")
    )


def _png_zero_bomb(side: int) -> bytes:
    """A real ``side x side`` grayscale PNG of zeros: megabytes of pixels in a few kilobytes."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _tiff_header_only(width: int, height: int, samples: int = 1, bits: int = 8) -> bytes:
    """A little-endian TIFF whose one IFD declares ``width x height x samples`` with 64 bytes of data."""
    payload = b"\0" * 64
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, bits),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 0),  # strip offset, set below
        (277, 3, samples),
        (278, 4, height),
        (279, 4, len(payload)),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        if kind == 4:
            ifd += struct.pack("<HHII", tag, kind, 1, value)
        else:
            ifd += struct.pack("<HHIHH", tag, kind, 1, value, 0)
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + payload


def _bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 64, 0, 0, 14 + len(info)) + info + b"\0" * 64


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 marker is patched to declare ``width x height``."""
    data = bytearray(_encode(_scan(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 64


def _multipage_tiff(pages: int, blank_first: int) -> bytes:
    stack = np.stack(
        [np.zeros((48, 48), np.uint16) if i < blank_first else _scan(48).astype(np.uint16) for i in range(pages)]
    )
    return _tiff(stack, photometric="minisblack")  # one page per slice, not one planar RGB page


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def _zip_bomb(name: str, gib: float, declared: int | None = None) -> bytes:
    """A one-entry zip that inflates to ``gib`` GiB of zeros (one deflate segment repeated; no zip64).

    ``declared`` is the uncompressed size its headers claim (default the true one): a lying bomb.
    """
    chunk = 64 << 20
    count = int(gib * (1 << 30)) // chunk
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    body = segment * count + b"\x03\x00"  # an empty final block ends the stream
    crc = 0
    zeros = bytes(chunk)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    size = chunk * count if declared is None else declared
    encoded = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), size, len(encoded), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body), size, len(encoded), 0, 0, 0, 0, 0, 0
    )
    directory = central + encoded
    offset = len(local) + len(encoded) + len(body)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), offset, 0)
    return local + encoded + body + directory + end


def _gzip_bomb(gib: float, head: bytes = b"") -> bytes:
    """A multi-member gzip that inflates to ``head`` plus ``gib`` GiB of zeros."""
    chunk = 64 << 20
    member = gzip.compress(bytes(chunk), compresslevel=9)
    return gzip.compress(head) + member * (int(gib * (1 << 30)) // chunk)


def _nifti(shape: tuple[int, ...], dtype: type = np.int16, data: bytes | None = None) -> bytes:
    """A NIfTI-1 header for ``shape`` followed by ``data`` (default: the full zero volume)."""
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    if data is None:
        data = bytes(int(np.prod(shape)) * np.dtype(dtype).itemsize)
    return header.binaryblock + b"\0" * 4 + data


def _corpus() -> list[tuple[str, str, bytes, str]]:
    """``(file name, reader, content, expected)``: reader ``image``, ``mask`` or ``volume``; expected
    ``error`` (the project's own error), ``ok`` (read) or ``any`` (either)."""
    png, tif, jpg = _encode(_scan(), "PNG"), _tiff(_scan()), _encode(_scan(), "JPEG")
    webp, bmp, npy = _encode(_scan(), "WEBP"), _encode(_scan(), "BMP"), _npy(_scan())
    garbage = _RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    graded = np.tile(np.arange(100, dtype=np.uint8), (48, 1))
    nan_image = _RNG.random((48, 48), dtype=np.float32)
    nan_image[5:9, 5:9] = np.nan
    small_nifti = _nifti((16, 16, 4))
    cases: list[tuple[str, str, bytes, str]] = [
        # empty and garbage
        ("empty.png", "image", b"", "error"),
        ("empty.tif", "image", b"", "error"),
        ("empty.npy", "image", b"", "error"),
        ("garbage.png", "image", garbage, "error"),
        ("garbage.tif", "image", b"II*\0" + garbage, "error"),
        ("garbage.jpg", "image", b"\xff\xd8\xff" + garbage, "error"),
        ("garbage.webp", "image", b"RIFF\0\0\0\0WEBP" + garbage, "error"),
        ("garbage.bmp", "image", b"BM" + garbage, "error"),
        ("garbage.npy", "image", b"\x93NUMPY" + garbage, "error"),
        # truncated
        ("truncated.png", "image", png[: len(png) // 2], "error"),
        ("truncated.tif", "image", tif[: len(tif) // 2], "any"),
        ("truncated.jpg", "image", jpg[: len(jpg) // 2], "any"),  # PIL may fill the missing part
        ("truncated.webp", "image", webp[: len(webp) // 2], "error"),
        ("truncated.bmp", "image", bmp[: len(bmp) // 2], "error"),
        ("truncated.npy", "image", npy[: len(npy) // 2], "error"),
        # wrong suffixes
        ("png_named.jpg", "image", png, "ok"),
        ("jpeg_named.png", "image", jpg, "ok"),
        ("tiff_named.png", "image", tif, "ok"),
        ("npy_named.png", "image", npy, "error"),
        ("png_named.npy", "image", png, "error"),
        ("notes.txt", "image", b"hello", "error"),
        ("no_suffix", "image", png, "error"),
        # headers declaring huge images, nothing behind them
        ("huge_header.png", "image", _png_header_only(100_000, 100_000), "error"),
        ("huge_header_rgb.png", "image", _png_header_only(30_000, 30_000, color_type=2), "error"),
        ("huge_header.tif", "image", _tiff_header_only(100_000, 100_000), "error"),
        ("huge_header_16bit.tif", "image", _tiff_header_only(6000, 6000, bits=16), "error"),
        ("huge_header.bmp", "image", _bmp_header_only(50_000, 50_000), "error"),
        ("huge_header.jpg", "image", _jpeg_claiming(60_000, 60_000), "error"),
        ("huge_header.npy", "image", _npy_header_only((100_000, 100_000)), "error"),
        ("huge_header_3d.npy", "image", _npy_header_only((512, 512, 512), "<u2"), "error"),
        ("zero_bomb_8000.png", "image", _png_zero_bomb(8000), "error"),
        # many channels, pages, frames
        (
            "channels64.tif",
            "image",
            _tiff(_RNG.integers(0, 255, (48, 48, 64), dtype=np.uint8), planarconfig="contig"),
            "error",
        ),
        ("channels64_huge_header.tif", "image", _tiff_header_only(4096, 4096, samples=64, bits=16), "error"),
        ("multipage_blank_first.tif", "image", _multipage_tiff(6, blank_first=1), "ok"),
        ("multipage_all_blank.tif", "image", _multipage_tiff(6, blank_first=6), "ok"),
        ("many_pages.tif", "image", _tiff(np.zeros((300, 16, 16), np.uint8)), "ok"),
        ("animated.png", "image", _animated("PNG"), "ok"),
        ("animated.webp", "image", _animated("WEBP"), "ok"),
        ("animated_gif_named.png", "image", _animated("GIF"), "ok"),
        # masks
        ("graded_mask.png", "mask", _encode(graded, "PNG"), "ok"),
        ("graded_float_mask.tif", "mask", _tiff(graded.astype(np.float32) / 99), "ok"),
        ("multipage_mask.tif", "mask", _multipage_tiff(3, blank_first=1), "ok"),
        ("bool_mask.npy", "mask", _npy(_scan() > 128), "ok"),
        # odd pixel values and layouts
        ("nan_float.tif", "image", _tiff(nan_image), "error"),
        ("inf_float.npy", "image", _npy(np.full((48, 48), np.inf, np.float32)), "error"),
        ("one_by_one.png", "image", _encode(np.zeros((1, 1), np.uint8), "PNG"), "error"),
        ("one_by_one.tif", "image", _tiff(np.zeros((1, 1), np.uint8)), "error"),
        ("one_by_one.npy", "image", _npy(np.zeros((1, 1), np.uint8)), "error"),
        ("object.npy", "image", _npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True), "error"),
        ("structured.npy", "image", _npy(np.zeros((48, 48), dtype=[("a", "<i4"), ("b", "<f4")])), "error"),
        ("complex.npy", "image", _npy(np.zeros((48, 48), np.complex64)), "error"),
        ("four_d.npy", "image", _npy(np.zeros((2, 3, 32, 32), np.uint8)), "error"),
        ("negative_int64.npy", "image", _npy(_scan().astype(np.int64) - 300), "ok"),
        ("rgb16.png", "image", _encode_png16_rgb(), "ok"),
        ("palette.tif", "image", _pil_palette("TIFF"), "ok"),
        # volumes
        ("garbage.zip", "volume", b"PK\x03\x04" + garbage, "error"),
        ("empty.zip", "volume", _zip([]), "error"),
        ("not_dicom.zip", "volume", _zip([("a.dcm", garbage), ("b.txt", b"x")]), "error"),
        ("traversal.zip", "volume", _zip([("../../evil.dcm", garbage)]), "error"),
        ("many_entries.zip", "volume", _zip([(f"s/{i}.dcm", b"x") for i in range(6000)]), "error"),
        ("zip_bomb.zip", "volume", _zip_bomb("slice.dcm", 1.5), "error"),
        ("zip_bomb_lying_size.zip", "volume", _zip_bomb("slice.dcm", 1.5, declared=1 << 20), "error"),
        ("gzip_bomb_valid_nifti.nii.gz", "volume", _gzip_bomb(0.25, head=_nifti((512, 512, 512), data=b"")), "any"),
        ("gzip_bomb.nii.gz", "volume", _gzip_bomb(1.5), "error"),
        ("gzip_bomb_with_header.nii.gz", "volume", _gzip_bomb(1.5, head=_nifti((1024, 1024, 768), data=b"")), "error"),
        ("garbage.nii", "volume", garbage, "error"),
        ("garbage.nii.gz", "volume", gzip.compress(garbage), "error"),
        ("not_gzip.nii.gz", "volume", garbage, "error"),
        ("empty.nii.gz", "volume", b"", "error"),
        ("huge_dims.nii", "volume", _nifti((10_000, 10_000, 10_000), data=b""), "error"),
        ("truncated.nii", "volume", small_nifti[: len(small_nifti) - 100], "error"),
        ("garbage.dcm", "volume", b"\0" * 128 + b"DICM" + garbage, "error"),
        ("unknown.bin", "volume", garbage, "error"),
    ]
    return cases


def _encode_png16_rgb() -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", _RNG.integers(0, 65535, (48, 48, 3), dtype=np.uint16))
    assert ok
    return encoded.tobytes()


def _pil_palette(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_scan()).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, format=fmt)
    return buffer.getvalue()


# --- the reader process ---------------------------------------------------------------------------

_RUNNER = r"""
import json, resource, sys, time
from pathlib import Path

from brainviewer.data.io import ScanReadError, read_image_with_notes, read_mask_with_notes
from brainviewer.data.volumes import VolumeError, open_volume
from brainviewer.views.review_sources import items_from_uploads

folder = Path(sys.argv[1])
for line in (folder / "manifest.jsonl").read_text().splitlines():
    case = json.loads(line)
    data = (folder / case["file"]).read_bytes()
    name = case["name"]
    started = time.perf_counter()
    result = {"name": name, "outcome": "ok", "notes": [], "detail": ""}
    try:
        if case["reader"] == "image":
            result["notes"] = read_image_with_notes(data, name).notes
        elif case["reader"] == "mask":
            result["notes"] = read_mask_with_notes(data, name).notes
        else:
            open_volume(data, name)
    except (ScanReadError, VolumeError) as err:
        result["outcome"], result["detail"] = "error", str(err)
    except BaseException as err:  # anything else is a bug the test reports
        result["outcome"], result["detail"] = "crash", f"{type(err).__name__}: {err}"
    if case["reader"] != "volume":  # the Review upload flow must turn every problem into a message
        try:
            items_from_uploads([(name, data)])
        except BaseException as err:
            result["outcome"], result["detail"] = "crash", f"items_from_uploads: {type(err).__name__}: {err}"
    result["seconds"] = time.perf_counter() - started
    # this process's own high-water mark (VmHWM): ru_maxrss also counts the parent's memory at the fork
    result["peak_rss"] = next(
        (int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")),
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """Write the corpus, read it all in one subprocess, and return one result per file name."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    manifest = []
    for index, (name, reader, content, expected) in enumerate(_corpus()):
        file = f"{index:03d}.bin"
        (folder / file).write_bytes(content)
        manifest.append(json.dumps({"name": name, "reader": reader, "file": file, "expected": expected}))
    (folder / "manifest.jsonl").write_text("\n".join(manifest))
    script = folder / "run_corpus.py"
    script.write_text(_RUNNER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    completed = subprocess.run(
        [sys.executable, str(script), str(folder)],
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS_TOTAL,
        cwd=ROOT,
        env=env,
    )
    results = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["name"]] = result
    done = len(results)
    assert completed.returncode == 0, f"the reader process died after {done} case(s):\n{completed.stderr[-3000:]}"
    return results


def test_the_corpus_is_large_enough() -> None:
    assert len(_corpus()) >= 40


def test_every_case_gets_the_projects_error_or_is_handled(corpus_results: dict[str, dict[str, object]]) -> None:
    expected = {name: want for name, _, _, want in _corpus()}
    assert set(corpus_results) == set(expected), "some cases printed no result"
    crashes = {name: r["detail"] for name, r in corpus_results.items() if r["outcome"] not in ("ok", "error")}
    assert not crashes, f"not the project's error: {crashes}"
    wrong = {
        name: (want, corpus_results[name]["outcome"], corpus_results[name]["detail"])
        for name, want in expected.items()
        if want != "any" and corpus_results[name]["outcome"] != want
    }
    assert not wrong, f"(expected, got, detail): {wrong}"


def test_every_error_says_what_to_do(corpus_results: dict[str, dict[str, object]]) -> None:
    """An error message is a sentence or more, not a bare exception name."""
    short = {
        name: r["detail"] for name, r in corpus_results.items() if r["outcome"] == "error" and len(r["detail"]) < 40
    }
    assert not short


def test_memory_and_time_stay_bounded(corpus_results: dict[str, dict[str, object]]) -> None:
    peak = max(int(r["peak_rss"]) for r in corpus_results.values())
    assert peak < MAX_RSS_BYTES, f"reader process peaked at {peak / 2**20:,.0f} MiB"
    slow = {name: round(r["seconds"], 1) for name, r in corpus_results.items() if r["seconds"] > MAX_SECONDS_PER_CASE}
    assert not slow, f"cases over {MAX_SECONDS_PER_CASE:.0f} s: {slow}"


def test_pages_frames_and_graded_masks_are_reported(corpus_results: dict[str, dict[str, object]]) -> None:
    """What the readers did to a multi-page, animated or graded input is said, not silent."""

    def notes(name: str) -> str:
        return " ".join(corpus_results[name]["notes"])

    assert "page 2 of 6 is shown because page 1 is blank" in notes("multipage_blank_first.tif")
    assert "all 6 pages are blank" in notes("multipage_all_blank.tif")
    assert "the first 16 of its 300 pages are blank" in notes("many_pages.tif")
    for name in ("animated.png", "animated.webp", "animated_gif_named.png"):
        assert "animated image: frame 1 of 12 is shown" in notes(name), name
    assert "graded mask (0-99, 100 levels)" in notes("graded_mask.png")
    assert "> 49.5, half its maximum" in notes("graded_mask.png")
    assert "graded mask" in notes("graded_float_mask.tif")
    assert "page 1 of 3 is shown" in notes("multipage_mask.tif")
    assert not notes("png_named.jpg") and not notes("bool_mask.npy")


def test_the_review_upload_flow_shows_what_the_readers_did() -> None:
    """A multi-page scan, its multi-page mask and a graded mask reach the Review page as messages."""
    from brainviewer.views.review_sources import items_from_uploads

    scan = _multipage_tiff(3, blank_first=1)
    mask_pages = np.zeros((3, 48, 48), np.uint8)
    mask_pages[1, 10:20, 10:20] = 255  # the tumour is on the page shown (page 2), not on page 1
    graded = np.tile(np.arange(48, dtype=np.uint8) * 2, (48, 1))
    items, errors = items_from_uploads(
        [
            ("a.tif", scan),
            ("a_mask.tif", _tiff(mask_pages, photometric="minisblack")),
            ("b.png", _encode(_scan(48), "PNG")),
            ("b_mask.png", _encode(graded, "PNG")),
        ]
    )
    assert errors == []
    first, second = items
    assert any("page 2 of 3 is shown because page 1 is blank" in m for m in first.messages)
    assert first.truth is not None and int(first.truth.sum()) == 100  # the mask followed its scan's page
    assert any("graded mask (0-94, 48 levels)" in m and "> 47" in m for m in second.messages)
