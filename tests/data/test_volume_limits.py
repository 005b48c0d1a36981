"""Volume readers refuse hostile or malformed uploads quickly and without large allocations.

Every input is generated here (nothing is committed): zip and gzip bombs, a zip of many blank DICOM slices,
NIfTI headers that declare huge, empty or geometry-less volumes, and a preprocessing.json with an absurd
input size. Each must raise the project's own error, naming the limit, in a few seconds and under a few
hundred MiB (peak traced by :mod:`tracemalloc`, which sees NumPy's and the decompressors' buffers).
"""

from __future__ import annotations

import gzip
import io
import json
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainviewer.data.volumes import VolumeError, open_volume, read_dicom_files, read_dicom_zip, read_nifti
from brainviewer.data.volumes.compressed import ZipBudget
from brainviewer.model.preprocessing import PREPROCESSING_FILE, Preprocessing
from tests.data.test_volumes import make_dicom, ras_volume, series_files, zip_bytes

MIB = 1024**2
ZEROS = bytes(MIB)


def refused(
    call: Callable[[], object], error: type[Exception], match: str, seconds: float = 5.0, mib: int = 400
) -> str:
    """Run ``call``, expecting ``error`` matching ``match``; assert it took under ``seconds`` and a traced
    peak under ``mib`` MiB. Returns the message."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as info:
            call()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < seconds, f"refused after {elapsed:.1f} s"
    assert peak < mib * MIB, f"peak allocation {peak / MIB:.0f} MiB"
    return str(info.value)


def zeros_zip(entries: dict[str, int]) -> bytes:
    """A deflated zip of ``{name: MiB of zeros}``, written in 1 MiB chunks."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, mib in entries.items():
            with archive.open(name, "w", force_zip64=True) as entry:
                for _ in range(mib):
                    entry.write(ZEROS)
    return buffer.getvalue()


def nifti_header(shape: tuple[int, ...], dtype: type = np.int16, srow: np.ndarray | None = None) -> bytes:
    """The 352 bytes before the voxels of a single-file NIfTI-1 image of ``shape`` (dim set directly, so a
    zero-size dimension is possible); ``srow``: a 3x4 sform written as is (qform off)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    dim = np.ones(8, dtype=np.int16)
    dim[0] = len(shape)
    dim[1 : 1 + len(shape)] = shape
    header["dim"] = dim
    header["pixdim"][1:4] = 1.0
    header["vox_offset"] = 352
    if srow is not None:
        header["qform_code"], header["sform_code"] = 0, 1
        header["srow_x"], header["srow_y"], header["srow_z"] = srow
    return header.binaryblock + b"\0" * 4


def gzip_stream(head: bytes, zero_mib: int) -> bytes:
    """``head`` then ``zero_mib`` MiB of zeros, gzip-compressed in chunks."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        stream.write(head)
        for _ in range(zero_mib):
            stream.write(ZEROS)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# zip
# --------------------------------------------------------------------------------------------


def test_zip_bomb_of_zeros_is_refused_from_its_headers() -> None:
    bomb = zeros_zip({"IM0001.dcm": 300})
    assert len(bomb) < 2 * MIB
    message = refused(lambda: read_dicom_zip(bomb, name="bomb.zip"), VolumeError, "compression-ratio limit")
    assert "BRAINVIEWER_MAX_COMPRESSION_RATIO" in message


def test_zip_of_many_blank_dicom_slices_is_refused_quickly() -> None:
    blank = make_dicom(None, np.zeros((512, 512), np.uint16), (0.0, 0.0, 0.0), 1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for k in range(1500):
            archive.writestr(f"IM{k:04d}.dcm", blank)
    data = buffer.getvalue()
    assert len(data) < 3 * MIB
    refused(lambda: open_volume(data, name="blank.zip"), VolumeError, "compression-ratio limit", seconds=2.0)


def test_zip_of_crafted_dicom_entries_is_skipped_quickly() -> None:
    """Entries of 15 MiB (under the ratio floor) that start like DICOM files and then hold only zeros, which
    pydicom would walk as millions of empty command elements."""
    crafted = bytes(128) + b"DICM" + bytes(15 * MIB)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.bin", np.random.default_rng(0).bytes(3 * MIB))  # keeps the zip's ratio low
        for k in range(4):
            archive.writestr(f"IM{k}.dcm", crafted)
    data = buffer.getvalue()
    refused(lambda: read_dicom_zip(data, name="crafted.zip"), VolumeError, r"No DICOM images in crafted\.zip")


def test_a_zip_entry_whose_header_lies_is_refused() -> None:
    archive = zipfile.ZipFile(io.BytesIO(zeros_zip({"a.dcm": 2})))
    member = archive.infolist()[0]
    member.file_size = 1000  # the header says 1000 bytes; the entry inflates to 2 MiB
    with pytest.raises(VolumeError, match=r"a\.dcm in lies\.zip"):
        ZipBudget(10_000, "lies.zip").read(archive, member)


def test_zip_of_blank_non_dicom_files_is_skipped_quickly() -> None:
    data = zeros_zip({f"part{k}.bin": 1 for k in range(12)})  # 12 MiB: under the ratio floor, not DICOM
    refused(lambda: read_dicom_zip(data, name="zeros.zip"), VolumeError, r"No DICOM images in zeros\.zip")


def test_too_many_zip_entries_are_refused() -> None:
    from brainviewer.data.volumes import MAX_DICOM_FILES

    files = [(f"f{k}.txt", b"") for k in range(MAX_DICOM_FILES + 1)]
    refused(lambda: read_dicom_zip(zip_bytes(files), name="many.zip"), VolumeError, "DICOM file limit")


def test_dicom_series_over_the_voxel_limit_is_refused_from_its_headers() -> None:
    blank = make_dicom(None, np.zeros((512, 512), np.uint16), (0.0, 0.0, 0.0), 1)
    loads: list[int] = []

    def files():  # 1,500 blank 512 x 512 slices, each loaded only when asked for
        for k in range(1500):
            yield f"IM{k:04d}.dcm", (lambda k=k: loads.append(k) or blank)

    # the header count and the memory bound are the checks; the time bound only catches a runaway (under
    # tracemalloc 513 headers take about 3 s on a quiet 2-core machine, and took 5.8 s beside a training run)
    read = lambda: read_dicom_files(files(), label="blank")  # noqa: E731
    message = refused(read, VolumeError, "the volume limit", seconds=30.0, mib=450)
    assert "BRAINVIEWER_MAX_VOLUME_VOXELS" in message
    assert len(loads) == 513  # refused at the first slice past 512 x 512 x 512 voxels, none decoded


def test_small_dicom_series_still_reads() -> None:
    volume = read_dicom_zip(zip_bytes(series_files(3)), name="ok.zip")
    assert volume.n_slices == 3


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------


def test_gzip_bomb_nifti_is_refused_without_inflating_it() -> None:
    bomb = gzip_stream(nifti_header((512, 512, 512), np.uint8), 128)  # declared 128 MiB, all zeros
    assert len(bomb) < 1 * MIB
    message = refused(lambda: read_nifti(bomb, name="bomb.nii.gz"), VolumeError, "compression-ratio limit", mib=120)
    assert "bomb.nii.gz" in message


def test_gzip_data_past_the_declared_volume_is_never_inflated(tmp_path: Path) -> None:
    data, affine = ras_volume()
    good = nib.Nifti1Image(data, affine).to_bytes()
    padded = gzip_stream(good, 200)  # 200 MiB of zeros after a 6 x 5 x 4 volume
    tracemalloc.start()
    volume = read_nifti(padded, name="padded.nii.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert volume.n_slices == 4 and peak < 20 * MIB


def test_nifti_header_over_the_voxel_limit_is_refused_before_reading() -> None:
    huge = gzip.compress(nifti_header((2048, 2048, 1024), np.int16) + bytes(1000))
    message = refused(lambda: read_nifti(huge, name="huge.nii.gz"), VolumeError, "the volume limit", mib=20)
    assert "BRAINVIEWER_MAX_VOLUME_VOXELS" in message


def test_large_float64_nifti_is_refused_from_its_header() -> None:
    data = gzip.compress(nifti_header((512, 512, 512), np.float64) + bytes(4096))
    message = refused(lambda: read_nifti(data, name="f64.nii.gz"), VolumeError, "decoded-volume limit", mib=20)
    assert "float64" in message and "BRAINVIEWER_MAX_VOLUME_MB" in message


def test_nifti_with_a_zero_size_dimension_is_refused() -> None:
    data = nifti_header((4, 0, 4))
    refused(lambda: read_nifti(data, name="empty.nii"), VolumeError, "dimension of size 0")


@pytest.mark.parametrize(
    ("srow", "match"),
    [
        (np.full((3, 4), np.nan), "NaN or infinite"),
        (np.array([[np.inf, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), "NaN or infinite"),
        (np.zeros((3, 4)), "zero or singular"),
        (np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]]), "zero or singular"),
        (np.array([[1e30, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), "beyond the 1e\\+06 mm"),
        (np.array([[1e-5, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), "voxel sizes"),
    ],
)
def test_nifti_with_a_broken_affine_is_refused_plainly(srow: np.ndarray, match: str) -> None:
    data = nifti_header((4, 4, 4), np.int16, srow=srow) + bytes(4 * 4 * 4 * 2)
    message = refused(lambda: read_nifti(data, name="broken.nii"), VolumeError, match)
    for raw in ("IndexError", "LinAlgError", "OrientationError"):
        assert raw not in message


def test_nifti_checks_also_apply_to_the_mask_file() -> None:
    data, affine = ras_volume()
    scan = nib.Nifti1Image(data, affine).to_bytes()
    mask = nifti_header((6, 5, 4), np.uint8, srow=np.zeros((3, 4))) + bytes(120)
    with pytest.raises(VolumeError, match="zero or singular"):
        read_nifti(scan, name="scan.nii", mask=mask, mask_name="mask.nii")


# --------------------------------------------------------------------------------------------
# preprocessing.json
# --------------------------------------------------------------------------------------------


def test_preprocessing_with_a_huge_input_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps({"input_size": 20000}))
    message = refused(lambda: Preprocessing.load(tmp_path), ValueError, "input_size must be at most 1024", mib=5)
    assert "20000" in message
    assert Preprocessing(input_size=1024).input_size == 1024
