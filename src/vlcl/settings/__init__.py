"""Settings: one registered object per kind of continual-learning problem (:mod:`vlcl.settings.base`).

``captions`` (image-caption sequences scored by retrieval), ``classification`` (MTIL) and ``modality_pairs``
(CMCL's feature mode) ship with vlcl; docs/settings.md says how to add one.
"""

from vlcl.settings.base import (
    Batch,
    Setting,
    TaskMetric,
    UnknownSettingError,
    list_settings,
    make_batch,
    register_setting,
    setting_named,
    setting_of,
)
from vlcl.settings.captions import CaptionBatch
from vlcl.settings.classification import ClassBatch
from vlcl.settings.modality_pairs import PairBatch

__all__ = [
    "Batch",
    "CaptionBatch",
    "ClassBatch",
    "PairBatch",
    "Setting",
    "TaskMetric",
    "UnknownSettingError",
    "list_settings",
    "make_batch",
    "register_setting",
    "setting_named",
    "setting_of",
]
