"""Continual-learning summaries of an accuracy matrix, and zero-shot retention."""

from __future__ import annotations

import pytest
import torch

from vlcl.metrics import continual_summary, performance_drop, zeroshot_retention_summary

# Row t = evaluation after task t, column i = task i.
A = [
    [70.0, 20.0, 10.0],
    [60.0, 80.0, 40.0],
    [50.0, 85.0, 90.0],
]


def test_hand_computed_3x3():
    # last       = (50 + 85 + 90) / 3                          = 75
    # avg        = mean of column means (180/3, 185/3, 140/3)  = 505 / 9
    # transfer   = mean(A[0][1], mean(A[0][2], A[1][2])) = mean(20, 25) = 22.5
    # bwt        = mean(50 - 70, 85 - 80)                      = -7.5
    # forgetting = mean(max(70, 60, 50) - 50, max(80, 85) - 85) = mean(20, 0) = 10
    #              (task 1 ends at its best: 0, not -5; Mammoth's max includes the final row)
    # plasticity = (70 + 80 + 90) / 3                          = 80
    assert continual_summary(A) == pytest.approx(
        {"last": 75.0, "avg": 505 / 9, "transfer": 22.5, "bwt": -7.5, "forgetting": 10.0, "plasticity": 80.0}
    )


def test_tensor_input_matches_list():
    assert continual_summary(torch.tensor(A)) == pytest.approx(continual_summary(A))


def test_single_task():
    assert continual_summary([[42.0]]) == {
        "last": 42.0, "avg": 42.0, "transfer": None, "bwt": None, "forgetting": None, "plasticity": 42.0,
    }


@pytest.mark.parametrize("matrix", [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[1.0, 2.0], [3.0]], [], [1.0, 2.0]])
def test_non_square_raises(matrix):
    with pytest.raises(ValueError, match="square T x T"):
        continual_summary(matrix)


def test_non_square_message_names_the_shape():
    with pytest.raises(ValueError, match=r"3 rows of lengths \[2, 2, 2\]"):
        continual_summary([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


def test_performance_drop_and_retention():
    assert performance_drop(60.0, 45.5) == 14.5
    assert zeroshot_retention_summary(60.0, [58.0, 50.0, 55.0]) == pytest.approx(
        {"pretrained": 60.0, "final": 55.0, "pd": 5.0, "min": 50.0, "mean": 163 / 3}
    )
    with pytest.raises(ValueError, match="empty"):
        zeroshot_retention_summary(60.0, [])
