"""TiC-CLIP's replay strategies at equal compute: which old time steps a step trains on, and how much.

TiC-CLIP (Garg et al. 2023, "TiC-CLIP: Continual Training of CLIP Models"; official code apple/ml-tic-clip
at 886f8c9) trains a CLIP over time steps ``0..T-1`` with the *same compute at every step*: the repository's
configs (``params/basic-*/<year>.yaml``) are iteration based (``is_iteration_based: True``) with
``max_iterations: 20500`` at every step for every strategy, and the oracle (``params/basic-oracle/2022.yaml``)
trains once with the summed budget, ``max_iterations: 143500`` = 7 x 20500. Data is drawn with
``dataset_resampled: True`` (with replacement). The strategies differ only in the pool they draw from.
With ``n_s`` the number of rows of step ``s`` and ``t`` the current step, the shares of step ``t``'s
training samples (:func:`step_mixture`) are:

* ``sequential``: ``{t: 1}``, only the new data.
* ``cumulative_all``: ``{s: n_s / (n_0 + ... + n_t)}`` for ``s <= t``, the union of all steps so far,
  uniform over its rows (the repository's cumulative scripts pass every year so far as one resampled set).
* ``exponential`` (Cumulative-Exponential, paper Sec. 4): the new data plus a replay buffer the size of the
  new data, so new and buffer get 1/2 each; the buffer halves at each step, as if half of it were replaced
  by the newest old step each time: step ``t-k`` gets ``2^-k`` of the buffer (``2^-(k+1)`` of the pool)
  for ``k = 1..t-1`` and the oldest step 0 the remainder, ``2^-(t-1)`` of the buffer (``2^-t`` of the
  pool, the same as step 1's, so the shares sum to 1 exactly).
  At ``t = 1``: ``{0: 1/2, 1: 1/2}``; ``t = 2``: ``{0: 1/4, 1: 1/4, 2: 1/2}``; ``t = 3``: ``{0: 1/8,
  1: 1/8, 2: 1/4, 3: 1/2}``. The repository ships no script for it (the rule follows the paper's text).
* ``equal`` (Cumulative-Equal, paper Sec. 4): the new data plus a buffer the size of the new data split
  evenly over the old steps: ``{t: 1/2}`` and ``1 / (2 t)`` for each ``s < t``. No script either.
* ``restart``: the data of ``cumulative_all``, but each step trains from the initial weights
  (:func:`starts_from_initial`); the data function only gives the data.
* oracle (:func:`oracle_samples`, one row, not a per-step strategy): one training from the initial weights
  on the union of all ``T`` steps (shares ``n_s / sum(n)``) with the summed budget ``T x`` per-step budget.

At step 0 every strategy trains on step 0 alone. Shares are of the pool, independent of the old steps'
sizes for ``exponential`` and ``equal`` (an old step smaller than its share is repeated).

Counts (:func:`step_counts`): ``budget x share`` rounded by the largest remainder (Hamilton) rule, ties to
the newer step, so every strategy draws exactly ``budget`` samples at every step. Rows within a step
(:func:`step_samples`): by default in epochs (a seeded permutation of the step's rows, repeated as often
as the count needs: each row drawn ``floor`` or ``ceil`` of ``count / n_s`` times); with
``with_replacement=True`` i.i.d. uniform, as the official ``dataset_resampled`` does. The samples come back
shuffled, as ``(step, row)`` pairs. Everything is seeded with a numpy Generator (the official code draws
from webdataset's shard resampler: the same structure, not the same draws).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

STRATEGIES: tuple[str, ...] = ("sequential", "cumulative_all", "exponential", "equal", "restart")
"""The per-step strategies; the oracle is a single training, :func:`oracle_samples`."""

Sample = tuple[int, int]
"""(time step, row index within that step)."""


def _check_sizes(step_sizes: Sequence[int]) -> list[int]:
    try:
        sizes = [int(n) for n in step_sizes]
    except (TypeError, ValueError):
        raise ValueError(f"step_sizes must be a sequence of positive ints, got {step_sizes!r}") from None
    if not sizes or any(n <= 0 or n != s for n, s in zip(sizes, step_sizes)):
        raise ValueError(f"step_sizes must be a non-empty sequence of positive ints, got {list(step_sizes)!r}")
    return sizes


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def _check_step(step: int, n_steps: int) -> None:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < n_steps:
        raise ValueError(f"step must be an int in 0..{n_steps - 1}, got {step!r}")


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def starts_from_initial(strategy: str) -> bool:
    """Whether each step starts from the initial weights (``restart``) rather than the last step's model."""
    if strategy == "oracle":
        return True
    _check_strategy(strategy)
    return strategy == "restart"


def step_mixture(strategy: str, step: int, step_sizes: Sequence[int]) -> dict[int, Fraction]:
    """The share of each time step ``s <= step`` in step ``step``'s training samples (exact fractions, sum 1)."""
    _check_strategy(strategy)
    sizes = _check_sizes(step_sizes)
    _check_step(step, len(sizes))
    t = int(step)
    if t == 0 or strategy == "sequential":
        return {t: Fraction(1)}
    if strategy in ("cumulative_all", "restart"):
        total = sum(sizes[: t + 1])
        return {s: Fraction(sizes[s], total) for s in range(t + 1)}
    if strategy == "equal":
        return {**{s: Fraction(1, 2 * t) for s in range(t)}, t: Fraction(1, 2)}
    # exponential: step t-k gets 2^-(k+1) of the pool (k = 1..t-1), the oldest step 0 the remainder 2^-t.
    shares = {t - k: Fraction(1, 2 ** (k + 1)) for k in range(1, t)}
    shares[0] = Fraction(1, 2**t)
    shares[t] = Fraction(1, 2)
    return dict(sorted(shares.items()))


def split_counts(shares: dict[int, Fraction], budget: int, *, name: str = "budget") -> dict[int, int]:
    """``budget x share`` per step, rounded by the largest remainder (ties to the newer step); sums to budget."""
    budget = _check_count(name, budget)
    exact = {s: share * budget for s, share in shares.items()}
    counts = {s: math.floor(v) for s, v in exact.items()}
    left = budget - sum(counts.values())
    order = sorted(exact, key=lambda s: (exact[s] - counts[s], s), reverse=True)
    for s in order[:left]:
        counts[s] += 1
    return counts


def step_counts(strategy: str, step: int, step_sizes: Sequence[int], budget: int) -> dict[int, int]:
    """How many of step ``step``'s ``budget`` training samples each time step gives (sums to ``budget``)."""
    return split_counts(step_mixture(strategy, step, step_sizes), budget)


def _draw(counts: dict[int, int], sizes: list[int], rng: np.random.Generator, with_replacement: bool) -> list[Sample]:
    samples: list[Sample] = []
    for s, count in sorted(counts.items()):
        if count == 0:
            continue
        n = sizes[s]
        if with_replacement:
            rows = rng.integers(0, n, size=count)
        else:
            rows = np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]
        samples.extend((s, int(r)) for r in rows)
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


def step_samples(
    strategy: str,
    step: int,
    step_sizes: Sequence[int],
    budget: int,
    seed: int,
    *,
    with_replacement: bool = False,
) -> list[Sample]:
    """Exactly ``budget`` shuffled ``(step, row)`` samples for step ``step``, drawn by :func:`step_counts`."""
    counts = step_counts(strategy, step, step_sizes, budget)
    rng = np.random.default_rng([_check_seed(seed), int(step)])
    return _draw(counts, _check_sizes(step_sizes), rng, with_replacement)


def oracle_samples(
    step_sizes: Sequence[int], total_budget: int, seed: int, *, with_replacement: bool = False
) -> list[Sample]:
    """The oracle's ``total_budget`` samples over the union of all steps (shares ``n_s / sum(n)``), shuffled."""
    sizes = _check_sizes(step_sizes)
    total = sum(sizes)
    counts = split_counts({s: Fraction(n, total) for s, n in enumerate(sizes)}, total_budget, name="total_budget")
    rng = np.random.default_rng([_check_seed(seed), len(sizes), 1])
    return _draw(counts, sizes, rng, with_replacement)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class Budget:
    """The compute of one time step in training samples, the same at every step and for every strategy.

    TiC-CLIP fixes the number of iterations per step (``max_iterations: 20500`` at every step in the
    official configs), so the budget is a fixed number, not a function of the step's size: build it with
    :meth:`fixed`, :meth:`from_iterations` (iterations x batch size) or :meth:`from_epochs` (epochs x one
    reference size, e.g. the largest step's, fixed once for the whole run). The oracle gets :meth:`total`.
    """

    samples_per_step: int

    def __post_init__(self) -> None:
        _check_count("samples_per_step", self.samples_per_step)

    @classmethod
    def fixed(cls, samples: int) -> Budget:
        return cls(_check_count("samples", samples))

    @classmethod
    def from_iterations(cls, iterations: int, batch_size: int) -> Budget:
        return cls(_check_count("iterations", iterations) * _check_count("batch_size", batch_size))

    @classmethod
    def from_epochs(cls, epochs: float, reference_size: int) -> Budget:
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0 or math.isinf(epochs):
            raise ValueError(f"epochs must be a positive number, got {epochs!r}")
        samples = round(epochs * _check_count("reference_size", reference_size))
        if samples <= 0:
            raise ValueError(f"epochs x reference_size must be at least 1 sample, got {epochs!r} x {reference_size!r}")
        return cls(samples)

    def total(self, n_steps: int) -> int:
        """The oracle's budget: the per-step budget summed over ``n_steps`` steps."""
        return self.samples_per_step * _check_count("n_steps", n_steps)

    def to_dict(self) -> dict[str, int]:
        """For results.json."""
        return {"samples_per_step": self.samples_per_step}
