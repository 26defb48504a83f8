"""Evaluation metrics: retrieval recall, zero-shot accuracy, alignment, continual summaries."""

from vlcl.metrics.alignment import alignment_diagnostics
from vlcl.metrics.continual import (
    continual_summary,
    performance_drop,
    zeroshot_retention_summary,
)
from vlcl.metrics.retrieval import NonFiniteError, retrieval_recall
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
    "continual_summary",
    "logit_accuracy",
    "logit_predictions",
    "per_class_scores",
    "performance_drop",
    "retrieval_recall",
    "union_label_space",
    "zeroshot_accuracy",
    "zeroshot_accuracy_and_predictions",
    "zeroshot_classifier",
    "zeroshot_predictions",
    "zeroshot_retention_summary",
]
