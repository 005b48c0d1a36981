"""Plotly figures: categorical per-patient axes and a loss axis that starts at 0."""

from __future__ import annotations

from dataclasses import dataclass

from brainviewer.views.figures import loss_figure, paired_difference_figure, patient_dice_figure


@dataclass
class Scored:
    patient_id: str
    volume_dice: float


def test_patient_dice_bars_use_a_categorical_axis_for_numeric_ids() -> None:
    """figshare's ids are numbers: each must be one bar on a category axis, not a sliver at x = 10."""
    figure = patient_dice_figure([Scored("1", 0.8), Scored("2", 0.6), Scored("10", 0.9)], mean=0.77, median=0.8)
    assert figure.layout.xaxis.type == "category"
    (bars,) = [trace for trace in figure.data if trace.type == "bar"]
    assert list(bars.x) == ["2", "1", "10"]  # lowest Dice first, every id a string
    assert list(bars.y) == [0.6, 0.8, 0.9]


def test_patient_dice_bars_turn_integer_ids_into_strings() -> None:
    figure = patient_dice_figure([Scored(1, 0.5), Scored(10, 0.7)])  # type: ignore[arg-type]
    assert figure.layout.xaxis.type == "category"
    assert list(figure.data[0].x) == ["1", "10"]


def test_loss_axis_starts_at_zero_for_one_point_and_for_many() -> None:
    one = loss_figure([{"step": 1, "loss": 0.7}])
    assert one.layout.yaxis.range[0] == 0 and one.layout.yaxis.range[1] > 0.7
    assert one.layout.yaxis.rangemode == "nonnegative"
    many = loss_figure([{"step": s, "loss": 1 / s} for s in range(1, 5)])
    assert many.layout.yaxis.rangemode == "nonnegative"
    assert many.layout.yaxis.range is None  # autorange above 0
    assert loss_figure([]).layout.yaxis.rangemode == "nonnegative"
    assert loss_figure([{"step": 1, "loss": 0.0}]).layout.yaxis.range == (0, 1.0)


def test_paired_differences_are_bars_per_model_sorted_by_the_first_with_their_interval() -> None:
    figure = paired_difference_figure(
        ["1", "2", "10"],
        {"b − a": [0.2, -0.1, 0.05], "c − a": [0.0, 0.1, -0.3]},
        {"b − a": (-0.05, 0.15)},
        "Dice",
    )
    assert figure.layout.xaxis.type == "category"
    first, second = figure.data
    assert (first.name, second.name) == ("b − a", "c − a")
    assert list(first.x) == ["2", "10", "1"] == list(second.x)  # by the first difference, lowest first
    assert list(first.y) == [-0.1, 0.05, 0.2] and list(second.y) == [0.1, -0.3, 0.0]
    bands = [s for s in figure.layout.shapes if s.type == "rect"]
    assert [(s.y0, s.y1) for s in bands] == [(-0.05, 0.15)]  # only b − a was given an interval
    assert "Dice" in figure.layout.title.text
