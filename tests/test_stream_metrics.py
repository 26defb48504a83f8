"""The online metrics of stream mode (A_auc, A_avg, A_last, F_last), against hand computations."""

from __future__ import annotations

import math

import pytest

from vlcl.metrics import area_under_accuracy, last_forgetting, stream_summary

# A stream of 3 hidden tasks, evaluated 6 times along the way (percent, on the classes seen so far).
PERIODIC = [20.0, 40.0, 50.0, 45.0, 60.0, 55.0]
AT_TASK_ENDS = [40.0, 50.0, 55.0]
# Per class (4 classes) at each task end; class 3 is not seen before the last task.
CLASS_ACCURACY = [
    [80.0, 0.0, None, None],
    [60.0, 70.0, 30.0, None],
    [50.0, 75.0, 10.0, 40.0],
]


def test_hand_computed_summary():
    # A_auc  = (20 + 40 + 50 + 45 + 60 + 55) / 6 = 270 / 6 = 45
    # A_avg  = (40 + 50 + 55) / 3                = 145 / 3
    # A_last = 55
    # F_last: best before the last end, per class: 80, 70, 30, 0 (class 3 unseen: None -> 0, not counted)
    #         drops: 80 - 50 = 30, 70 - 75 = -5, 30 - 10 = 20 -> mean = 45 / 3 = 15
    assert stream_summary(PERIODIC, AT_TASK_ENDS, CLASS_ACCURACY) == pytest.approx(
        {"A_auc": 45.0, "A_avg": 145 / 3, "A_last": 55.0, "F_last": 15.0}
    )


def test_area_under_accuracy_is_the_mean():
    assert area_under_accuracy([10.0, 20.0, 60.0]) == pytest.approx(30.0)
    assert area_under_accuracy([0.5]) == 0.5  # fractions in, fractions out
    with pytest.raises(ValueError, match="accuracies"):
        area_under_accuracy([])


def test_units_are_kept():
    fractions = [[v / 100 if v is not None else None for v in row] for row in CLASS_ACCURACY]
    summary = stream_summary([p / 100 for p in PERIODIC], [a / 100 for a in AT_TASK_ENDS], fractions)
    assert summary == pytest.approx({"A_auc": 0.45, "A_avg": 1.45 / 3, "A_last": 0.55, "F_last": 0.15})


def test_forgetting_counts_a_class_seen_before_the_last_task_only():
    # class 1 first seen at the second end (None at the first): its best before the last end is 30
    rows = [[50.0, None], [40.0, 30.0], [45.0, 0.0]]
    assert last_forgetting(rows) == pytest.approx(((50 - 45) + (30 - 0)) / 2)
    # a class only seen at the last end never counts; a class never above 0 neither
    assert last_forgetting([[10.0, 0.0, None], [4.0, 5.0, 90.0]]) == pytest.approx(6.0)


def test_forgetting_is_none_without_an_earlier_task_end_or_a_class_to_count():
    assert last_forgetting([[60.0, 70.0]]) is None
    assert last_forgetting([[0.0, None], [50.0, 60.0]]) is None
    assert stream_summary([50.0], [60.0], [[60.0]])["F_last"] is None


@pytest.mark.parametrize(
    ("periodic", "ends", "classes", "argument"),
    [
        ([], [1.0], [[1.0]], "periodic"),
        ([1.0], [], [], "at_task_ends"),
        ([1.0], [1.0], [], "class_accuracy_at_task_ends"),
        ([1.0], [1.0, 2.0], [[1.0]], "class_accuracy_at_task_ends"),
        ([1.0], [1.0, 2.0], [[1.0], [1.0, 2.0]], "class_accuracy_at_task_ends"),
        ([math.nan], [1.0], [[1.0]], "periodic"),
        ([1.0], [math.inf], [[1.0]], "at_task_ends"),
        ([1.0], [1.0], [[math.nan]], "class_accuracy_at_task_ends"),
    ],
)
def test_bad_inputs_are_one_line_value_errors(periodic, ends, classes, argument):
    with pytest.raises(ValueError, match=argument) as caught:
        stream_summary(periodic, ends, classes)
    assert "\n" not in str(caught.value)
