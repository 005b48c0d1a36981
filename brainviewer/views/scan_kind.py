"""Whether a scan is the kind a model was trained on (3-channel LGG slices vs grayscale scans; the plane a
series was acquired in), and which model fits it: the notes the Review and Patients pages show, and the model
they offer in one click."""

from __future__ import annotations

import numpy as np

from brainviewer.model.preprocessing import Preprocessing, is_grayscale, trained_on_grayscale


def input_kind_note(
    image: np.ndarray, prep: Preprocessing, model_label: str, channels_by_layout: bool = False
) -> str | None:
    """A note for the user when ``image`` is not the kind of scan the model was trained on, else ``None``.

    A 3-channel model trained on LGG's three sequences sees a grayscale scan (``(H, W)``, or three
    equal channels) repeated in all three; one trained on grayscale scans (see
    :func:`~brainviewer.model.preprocessing.trained_on_grayscale`) reads a 3-channel scan's distinct
    channels as they are. Either way its prediction may be poor, and the user should know why. With
    ``channels_by_layout`` (a ``kaggle_3m`` slice, see :class:`~brainviewer.views.review.ReviewItem`) three
    equal channels are a 3-channel scan with its missing sequences repeated, which the LGG model was trained on.
    """
    if prep.in_channels != 3:
        return None  # a 1-channel model picks its channel from a 3-channel scan by design
    image = np.asarray(image)
    gray_scan = image.ndim == 2 or (not channels_by_layout and is_grayscale(image))
    gray_model = trained_on_grayscale(prep.channel_names)
    if gray_scan and not gray_model:
        return (
            f"A grayscale scan: {model_label} was trained on 3-channel slices ({', '.join(prep.channel_names)}) "
            "and sees this scan repeated in all three, so its prediction may be poor. A model trained on grayscale "
            "scans (see the sidebar) suits it better."
        )
    if not gray_scan and gray_model:
        return (
            f"A 3-channel scan: {model_label} was trained on grayscale scans and reads these three different "
            "channels as they are, so its prediction may be poor. A model trained on 3-channel slices suits it better."
        )
    return None


def fitting_model(
    image: np.ndarray, candidates: list[tuple[str, Preprocessing]], channels_by_layout: bool = False
) -> str | None:
    """The first candidate ``(label, preprocessing)`` whose model reads ``image``'s kind of scan (no
    :func:`input_kind_note` for it), or ``None``: what the Review page offers in one click."""
    for label, prep in candidates:
        if input_kind_note(image, prep, label, channels_by_layout) is None:
            return label
    return None


def planes_text(planes: list[str]) -> str:
    """``"axial"``, ``"axial and sagittal"``, ``"axial, coronal and sagittal"``."""
    return planes[0] if len(planes) == 1 else f"{', '.join(planes[:-1])} and {planes[-1]}"


def plane_note(series_plane: str | None, prep: Preprocessing, model_label: str) -> str | None:
    """A note when a series was acquired in a plane the model was not trained on, else ``None``: also when
    either plane is unknown (``series_plane`` ``None``, or weights that record no ``planes``), for the app never
    guesses what a model was trained on."""
    if series_plane is None or prep.planes is None or series_plane in prep.planes:
        return None
    return (
        f"{model_label} was trained on {planes_text(prep.planes)} slices only, and this series was acquired "
        f"{series_plane}: expect poorer predictions. A series of the patient in a plane it knows, if there is one, "
        "suits it better."
    )


def plane_fitting_model(
    series_plane: str | None, image: np.ndarray, candidates: list[tuple[str, Preprocessing]]
) -> str | None:
    """The first candidate ``(label, preprocessing)`` that records ``series_plane`` among its training planes and
    reads ``image``'s kind of scan (no :func:`input_kind_note`), or ``None``: what the Patients page offers in
    one click beside a :func:`plane_note`."""
    if series_plane is None:
        return None
    for label, prep in candidates:
        if prep.planes and series_plane in prep.planes and input_kind_note(image, prep, label) is None:
            return label
    return None
