"""Every seed a run derives from its ``seed``, in one place (standard library only: the lowest layer).

Each function returns exactly the integer its user has always computed - the
embedded leaderboard reproduces to the last digit only if these never change.
A new random stream gets a new function here, not a formula in its module.

========================  =================================================  ==============================================
function                  value                                              used by
========================  =================================================  ==============================================
``stage_seed(s, i)``      ``s * 1000 + i + 1``                               engine (``vlcl.engine.loop``): ``torch.manual_seed``
                                                                             before ``method.setup`` (i = -1) and before each
                                                                             stage; the data-order generator of
                                                                             ``vlcl.engine.train.train_on`` (every benchmark,
                                                                             the ``features`` modality pairs included)
``fisher_seed(s, i)``     ``(s * 1_000_003 + i * 7_919 + 104_729) % 2^63``   ewc: the batches of the Fisher estimate
``replay_seed(s, i, p)``  ``(s * 1_000_003 + i * 7_919 + p * 104_729)        replay: the reservoir (p = 1, end of a stage) and
                          % 2^63``                                           the replayed draws (p = 2, during a stage)
``prototype_seed(s, i)``  ``(s * 1_000_003 + i * 7_919 + 15_485_863)         mulki: the k-means initialisation of a stage
                          % 2^63``
``reference_seed(s)``     ``s + 104_729``                                    zscl: the embedded reference images, and the
                                                                             subset of a reference folder
``reference_batch_seed``  ``s * 1_000_003 + i + 104_729``                    zscl: the per-step draws of reference images
``(s, i)``                                                                   and sentences of a stage
``stream_seed(s, d)``     ``(d * 1_000_003 + s * 7_919 + 67_867_967)         streams (``vlcl.engine.loop``): the order of a
                          % 2^63`` (d = ``data.seed``)                       ``data.stream=online`` run unless stream.seed is set
``ddas_seed(s, i)``       ``(s * 1_000_003 + i * 7_919 + 32_452_843)         moe_adapters: the DDAS autoencoder of stage i (its
                          % 2^63``                                           initial weights, calibration split, shuffles);
                                                                             i = -1: the reference autoencoder
``sit_seed(s, i)``        ``(s * 1_000_003 + i * 7_919 + 49_979_687)         sit: the memory's reservoir and draws of stage i;
                          % 2^63``                                           i = -1: the LoRA init, i = -2: the Xavier init
========================  =================================================  ==============================================

``s`` is the run's seed (``RunConfig.seed``, ``RunContext.seed``), ``i`` the
stage index (0-based; -1 = before the first stage). Note that
``fisher_seed(s, i) == replay_seed(s, i, 1)``: the two belong to different
methods, so their streams never meet in one run.
"""

from __future__ import annotations

REFERENCE_SEED_OFFSET = 104_729
"""Offset of zscl's reference streams from the run seed: apart from the benchmark's and pretraining's."""

_MODULUS = 1 << 63
_METHOD_MULTIPLIER = 1_000_003
_STAGE_MULTIPLIER = 7_919


def stage_seed(seed: int, stage_index: int) -> int:
    """The engine's seed of a stage (``torch.manual_seed`` and the data order); stage -1 = before setup."""
    return seed * 1000 + stage_index + 1


def replay_seed(seed: int, stage_index: int, purpose: int) -> int:
    """replay's seeds: the reservoir (purpose 1) and the replay draws (purpose 2), distinct from the engine's."""
    return (seed * _METHOD_MULTIPLIER + stage_index * _STAGE_MULTIPLIER + purpose * 104_729) % _MODULUS


def fisher_seed(seed: int, stage_index: int) -> int:
    """ewc's seed for the Fisher batches, distinct from the engine's data-order seeds (:func:`stage_seed`)."""
    return (seed * _METHOD_MULTIPLIER + stage_index * _STAGE_MULTIPLIER + 104_729) % _MODULUS


def prototype_seed(seed: int, stage_index: int) -> int:
    """mulki's seed of a stage's k-means initialisation, apart from the engine's streams (and ewc's)."""
    return (seed * _METHOD_MULTIPLIER + stage_index * _STAGE_MULTIPLIER + 15_485_863) % _MODULUS


def reference_seed(seed: int) -> int:
    """zscl's seed of the reference data: the embedded reference images, or the subset of a reference folder."""
    return seed + REFERENCE_SEED_OFFSET


def reference_batch_seed(seed: int, stage_index: int) -> int:
    """zscl's seed of a stage's reference draws (images and sentences per step); no modulus, as always."""
    return seed * _METHOD_MULTIPLIER + stage_index + REFERENCE_SEED_OFFSET


def ddas_seed(seed: int, stage_index: int) -> int:
    """moe_adapters' seed of stage i's DDAS autoencoder (i = -1: the reference one), apart from the other streams."""
    return (seed * _METHOD_MULTIPLIER + stage_index * _STAGE_MULTIPLIER + 32_452_843) % _MODULUS


def stream_seed(seed: int, data_seed: int) -> int:
    """The order of a stream (``data.stream=online``) when ``stream.seed`` is not set: every run seed a new stream."""
    return (data_seed * _METHOD_MULTIPLIER + seed * _STAGE_MULTIPLIER + 67_867_967) % _MODULUS


def sit_seed(seed: int, stage_index: int) -> int:
    """sit's seeds: the memory of stage i (reservoir and draws), the LoRA init (i = -1) and the Xavier init (i = -2)."""
    return (seed * _METHOD_MULTIPLIER + stage_index * _STAGE_MULTIPLIER + 49_979_687) % _MODULUS
