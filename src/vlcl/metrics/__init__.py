"""Evaluation metrics: retrieval recall, zero-shot accuracy, alignment, continual and stream summaries."""

from vlcl.metrics.alignment import alignment_diagnostics
from vlcl.metrics.continual import (
    continual_summary,
    performance_drop,
    zeroshot_retention_summary,
)
from vlcl.metrics.retrieval import NonFiniteError, retrieval_recall
from vlcl.metrics.stream import area_under_accuracy, last_forgetting, stream_summary
from vlcl.metrics.zeroshot import (
    logit_accuracy,
    logit_predictions,
    per_class_scores,
    union_label_space,
    zeroshot_accuracy,
    zeroshot_accuracy_and_predictions,
    zeroshot_classifier,
    zeroshot_predictions,
)

__all__ = [
    "NonFiniteError",
    "alignment_diagnostics",
    "area_under_accuracy",
    "continual_summary",
    "last_forgetting",
    "logit_accuracy",
    "logit_predictions",
    "per_class_scores",
    "performance_drop",
    "retrieval_recall",
    "stream_summary",
    "union_label_space",
    "zeroshot_accuracy",
    "zeroshot_accuracy_and_predictions",
    "zeroshot_classifier",
    "zeroshot_predictions",
    "zeroshot_retention_summary",
]
