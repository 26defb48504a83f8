"""Zero-shot: the pre-trained model, never updated (Continual-CLIP's baseline)."""

from vlcl.methods.base import Method
from vlcl.methods.registry import register_method


@register_method
class ZeroShot(Method):
    name = "zeroshot"
    description = "the pre-trained model without any training (reference for retention)"
    trains = False
    needs_task_boundaries = False  # never trains
