"""The plane note: said only when both the series' plane and the model's training planes are known."""

from __future__ import annotations

from brainviewer.model.preprocessing import Preprocessing
from brainviewer.views.scan_kind import plane_note, planes_text


def test_planes_read_as_a_list_in_words() -> None:
    assert planes_text(["axial"]) == "axial"
    assert planes_text(["axial", "sagittal"]) == "axial and sagittal"
    assert planes_text(["axial", "coronal", "sagittal"]) == "axial, coronal and sagittal"


def test_a_series_in_a_plane_the_model_never_saw_gets_a_note() -> None:
    axial_only = Preprocessing(planes=["axial"])
    note = plane_note("sagittal", axial_only, "lgg-unet-resnet18")
    assert note is not None
    assert note.startswith("lgg-unet-resnet18 was trained on axial slices only, and this series was acquired sagittal")


def test_no_note_when_the_model_knows_the_plane_or_either_plane_is_unknown() -> None:
    every_plane = Preprocessing(planes=["axial", "coronal", "sagittal"])
    assert plane_note("sagittal", every_plane, "m") is None
    assert plane_note(None, Preprocessing(planes=["axial"]), "m") is None  # e.g. a NIfTI or a PNG
    assert plane_note("sagittal", Preprocessing(), "m") is None  # weights that record no planes: no guess


def test_the_model_offered_for_a_series_records_its_plane_and_reads_its_kind_of_scan() -> None:
    import numpy as np

    from brainviewer.views.scan_kind import plane_fitting_model

    gray = np.zeros((8, 8), np.uint8)
    candidates = [
        ("unknown planes", Preprocessing()),
        ("lgg sagittal", Preprocessing(planes=["sagittal"])),  # reads 3-channel LGG slices, not grayscale
        ("gray axial", Preprocessing(planes=["axial"], channel_names=["grayscale"] * 3)),
        ("gray all", Preprocessing(planes=["axial", "coronal", "sagittal"], channel_names=["grayscale"] * 3)),
    ]
    assert plane_fitting_model("sagittal", gray, candidates) == "gray all"
    three_sequences = np.broadcast_to(np.array([1, 2, 3], np.uint8), (8, 8, 3))
    assert plane_fitting_model("sagittal", three_sequences, candidates) == "lgg sagittal"
    assert plane_fitting_model(None, gray, candidates) is None
