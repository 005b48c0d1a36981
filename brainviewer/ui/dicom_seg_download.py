"""The Patients page's DICOM SEG download: a predicted mask of an uploaded DICOM series as a DICOM
Segmentation object referring to the uploaded images (see :mod:`brainviewer.data.volumes.dicom_seg`).

The SEG is built only when the button is pressed (deferred download), from the files of the current
upload: a volume keeps no identifying header, so the source images are read again from the upload.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import streamlit as st

from brainviewer.data.volumes import Volume
from brainviewer.data.volumes.dicom_seg import dicom_seg_bytes, series_source_files
from brainviewer.ui.state import PATIENT_UPLOAD_KEY

logger = logging.getLogger(__name__)


def uploaded_files() -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the Patients page's current upload (empty when nothing is uploaded)."""
    files = st.session_state.get(PATIENT_UPLOAD_KEY) or []
    if not isinstance(files, list):
        files = [files]
    return [(f.name, f.getvalue()) for f in files]


def can_export_seg(volume: Volume) -> bool:
    """Whether ``volume`` is a single-frame DICOM series with geometry, the only kind a SEG can refer to."""
    return volume.source_kind == "dicom" and volume.affine is not None


def _seg_bytes(pred_masks: list[np.ndarray], volume: Volume, files: list[tuple[str, bytes]], model: str) -> bytes:
    """The SEG file, built when the button is pressed (the zip of an upload is opened afresh each time)."""
    return dicom_seg_bytes(pred_masks, volume, series_source_files(files), model)


def dicom_seg_button(volume: Volume, pred_masks: list[np.ndarray], model_label: str | None, stem: str) -> None:
    """A "Predicted mask (DICOM SEG)" download button for an uploaded DICOM series (nothing otherwise)."""
    if not can_export_seg(volume):
        return
    files = uploaded_files()
    if not files:
        return
    st.download_button(
        "Predicted mask (DICOM SEG)",
        data=functools.partial(_seg_bytes, pred_masks, volume, files, model_label or "brainviewer model"),
        file_name=f"{stem}_predicted_seg.dcm",
        mime="application/dicom",
        key="patient_dicom_seg",
        on_click="ignore",
        icon=":material/download:",
        help="A DICOM Segmentation (binary, one segment 'Tumour') referring to the uploaded images, for PACS "
        "viewers and 3D Slicer. Like any SEG it carries the patient and study fields of its source images "
        "(the standard requires them); nothing else identifying is added.",
    )
