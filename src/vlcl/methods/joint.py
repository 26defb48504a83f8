"""Joint training: all tasks' training data at once, one stage, evaluated once.

Not a continual method: the usual upper bound of the field. It sees the same
number of samples per epoch as the sum of the tasks, with the same epochs.
"""

from vlcl.methods.base import Method, Stage
from vlcl.methods.registry import register_method


@register_method
class Joint(Method):
    name = "joint"
    description = "all tasks' data at once in one stage (upper bound, not continual)"

    def stages(self, task_names: list[str]) -> list[Stage]:
        return [Stage(0, "joint", tuple(range(len(task_names))))]
