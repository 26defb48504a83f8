"""TiC-CLIP's replay strategies at equal compute (vlcl.data.time_replay): budgets, shares, determinism, errors."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from vlcl.data.time_replay import (
    STRATEGIES,
    Budget,
    oracle_samples,
    split_counts,
    starts_from_initial,
    step_counts,
    step_mixture,
    step_samples,
)

SIZES = [40, 25, 60, 10, 33, 50]  # six steps of unequal sizes, some smaller than the budget
BUDGET = 97


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_draws_exactly_the_budget_at_every_step(strategy: str) -> None:
    for step in range(len(SIZES)):
        samples = step_samples(strategy, step, SIZES, BUDGET, seed=3)
        assert len(samples) == BUDGET
        assert all(0 <= s <= step and 0 <= r < SIZES[s] for s, r in samples)
        assert sum(step_counts(strategy, step, SIZES, BUDGET).values()) == BUDGET
        assert sum(step_mixture(strategy, step, SIZES).values()) == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_step_zero_is_step_zero_alone(strategy: str) -> None:
    assert step_mixture(strategy, 0, SIZES) == {0: 1}
    assert {s for s, _ in step_samples(strategy, 0, SIZES, BUDGET, seed=0)} == {0}


def test_sequential_draws_only_the_current_step() -> None:
    for step in range(len(SIZES)):
        samples = step_samples("sequential", step, SIZES, BUDGET, seed=1)
        assert {s for s, _ in samples} == {step}
        rows = Counter(r for _, r in samples)
        assert len(rows) == min(BUDGET, SIZES[step])  # epochs: every row once before any repeats


@pytest.mark.parametrize("strategy", ["cumulative_all", "restart"])
def test_cumulative_all_is_uniform_over_the_union(strategy: str) -> None:
    step, budget = 3, 13500  # union of 135 rows: 100 draws of each row
    union = sum(SIZES[: step + 1])
    samples = step_samples(strategy, step, SIZES, budget, seed=0)
    per_row = Counter(samples)
    assert len(per_row) == union  # every row of the union is drawn
    assert set(per_row.values()) == {budget // union}  # epochs: exactly uniform
    iid = Counter(step_samples(strategy, step, SIZES, budget, seed=0, with_replacement=True))
    freq = np.array([iid[(s, r)] for s in range(step + 1) for r in range(SIZES[s])]) / budget
    assert np.abs(freq - 1 / union).max() < 4 * np.sqrt((1 / union) / budget)  # i.i.d.: uniform within 4 sigma
    steps = Counter(s for s, _ in samples)
    assert steps == {s: budget * SIZES[s] // union for s in range(step + 1)}


def test_exponential_shares_halve_going_back_and_the_oldest_takes_the_remainder() -> None:
    assert step_mixture("exponential", 1, SIZES) == {0: Fraction(1, 2), 1: Fraction(1, 2)}
    assert step_mixture("exponential", 2, SIZES) == {0: Fraction(1, 4), 1: Fraction(1, 4), 2: Fraction(1, 2)}
    assert step_mixture("exponential", 5, SIZES) == {
        0: Fraction(1, 32), 1: Fraction(1, 32), 2: Fraction(1, 16), 3: Fraction(1, 8), 4: Fraction(1, 4), 5: Fraction(1, 2)
    }
    # exact counts on a constructed data set: budget 640 at step 5 is divisible by every share
    samples = step_samples("exponential", 5, SIZES, 640, seed=4)
    assert Counter(s for s, _ in samples) == {0: 20, 1: 20, 2: 40, 3: 80, 4: 160, 5: 320}
    # the buffer (all but the new step) is the size of the new data
    assert sum(c for s, c in step_counts("exponential", 5, SIZES, 640).items() if s < 5) == 320


def test_equal_splits_the_buffer_evenly_over_the_old_steps() -> None:
    for step in range(1, len(SIZES)):
        mixture = step_mixture("equal", step, SIZES)
        assert mixture[step] == Fraction(1, 2)
        assert {mixture[s] for s in range(step)} == {Fraction(1, 2 * step)}
    samples = step_samples("equal", 5, SIZES, 1000, seed=2)
    assert Counter(s for s, _ in samples) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 100, 5: 500}
    # an old step smaller than its share (step 3: 10 rows, 100 draws) is repeated evenly: 10 times each row
    assert set(Counter(r for s, r in samples if s == 3).values()) == {10}


def test_rounding_is_largest_remainder_and_sums_to_the_budget() -> None:
    assert split_counts({0: Fraction(1, 3), 1: Fraction(1, 3), 2: Fraction(1, 3)}, 10) == {0: 3, 1: 3, 2: 4}
    assert step_counts("equal", 3, SIZES, 100) == {0: 16, 1: 17, 2: 17, 3: 50}
    for strategy in STRATEGIES:
        for budget in (1, 2, 7, 101):
            for step in range(len(SIZES)):
                assert sum(step_counts(strategy, step, SIZES, budget).values()) == budget


def test_the_oracle_covers_the_union_with_the_summed_budget() -> None:
    budget = Budget.fixed(BUDGET)
    total = budget.total(len(SIZES))
    assert total == BUDGET * len(SIZES)
    samples = oracle_samples(SIZES, total, seed=0)
    assert len(samples) == total
    assert set(samples) == {(s, r) for s, n in enumerate(SIZES) for r in range(n)}  # 582 draws, 218 rows
    counts = Counter(s for s, _ in samples)
    assert all(abs(counts[s] - total * n / sum(SIZES)) < 1 for s, n in enumerate(SIZES))
    assert starts_from_initial("oracle")


def test_restart_starts_from_the_initial_weights_and_the_others_warm_start() -> None:
    assert {s: starts_from_initial(s) for s in STRATEGIES} == {
        "sequential": False, "cumulative_all": False, "exponential": False, "equal": False, "restart": True
    }
    for step in range(len(SIZES)):
        assert step_mixture("restart", step, SIZES) == step_mixture("cumulative_all", step, SIZES)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_samples_are_deterministic_by_seed(strategy: str) -> None:
    a = step_samples(strategy, 4, SIZES, BUDGET, seed=7)
    assert a == step_samples(strategy, 4, SIZES, BUDGET, seed=7)
    assert a != step_samples(strategy, 4, SIZES, BUDGET, seed=8)
    assert oracle_samples(SIZES, 300, seed=1) == oracle_samples(SIZES, 300, seed=1)
    assert oracle_samples(SIZES, 300, seed=1) != oracle_samples(SIZES, 300, seed=2)


def test_budget_is_the_same_number_at_every_step() -> None:
    assert Budget.from_iterations(20500, 4).samples_per_step == 82000
    assert Budget.from_epochs(2, 50).samples_per_step == 100
    assert Budget.from_epochs(0.5, 33).samples_per_step == 16
    assert Budget.fixed(97).to_dict() == {"samples_per_step": 97}


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: step_mixture("lwf", 1, SIZES), "strategy"),
        (lambda: step_mixture("equal", 6, SIZES), "step"),
        (lambda: step_mixture("equal", -1, SIZES), "step"),
        (lambda: step_mixture("equal", 0, []), "step_sizes"),
        (lambda: step_mixture("equal", 0, [3, 0]), "step_sizes"),
        (lambda: step_mixture("equal", 0, [3, 2.5]), "step_sizes"),
        (lambda: step_samples("equal", 1, SIZES, 0, seed=0), "budget"),
        (lambda: step_samples("equal", 1, SIZES, 10, seed=-1), "seed"),
        (lambda: oracle_samples(SIZES, 0, seed=0), "total_budget"),
        (lambda: starts_from_initial("nope"), "strategy"),
        (lambda: Budget.fixed(0), "samples"),
        (lambda: Budget.from_epochs(0, 10), "epochs"),
        (lambda: Budget.from_epochs(1, 0), "reference_size"),
        (lambda: Budget.from_iterations(10, -1), "batch_size"),
        (lambda: Budget.fixed(10).total(0), "n_steps"),
    ],
)
def test_bad_input_is_a_one_line_value_error_naming_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.startswith(name + " ")
