"""Fine-tuning: train every parameter on each task in turn with the CLIP loss.

The lower bound on stability that every continual-learning paper reports:
nothing protects old knowledge. All behaviour is the :class:`Method` default.
"""

from vlcl.methods.base import Method
from vlcl.methods.registry import register_method


@register_method
class FineTune(Method):
    name = "finetune"
    description = "full fine-tuning task after task with the CLIP loss (lower bound on stability)"
    settings = ("captions", "classification", "modality_pairs")
    needs_task_boundaries = False  # one model trained on whatever comes: a stream is one long task
