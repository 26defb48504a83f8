"""What a benchmark is: a sequence of tasks plus held-out evaluation sets.

Data sets hold images as uint8 arrays ``[N, H, W, 3]`` at the model's
resolution: a numpy array (the embedded benchmark) or an
:class:`~vlcl.data.images.ImageStore`, which indexes like one and decodes
real image files only when a batch needs them (benchmarks read from a data
root, :mod:`vlcl.data.benchmarks.data_root`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from vlcl.data.images import ImageStore

Images = np.ndarray | ImageStore
"""uint8 [N, H, W, 3] at the model's resolution, in memory or decoded on indexing."""


@dataclass
class CaptionedImages:
    """Training pairs: image i has one or more captions; one is drawn per epoch.

    A classification task's training data also carries ``labels`` (long [N]) and ``class_prompts`` (per class,
    its prompts: the task's templates filled with the class name). Such a task trains with cross-entropy over
    the class-prompt embeddings (``vlcl.losses.class_prompt_loss``); its captions are each image's class
    prompt under the first template, for the methods that keep or distil image-caption pairs.
    """

    name: str
    images: Images  # uint8 [N, H, W, 3]
    captions: list[list[str]]
    labels: torch.Tensor | None = None
    class_prompts: list[list[str]] | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.captions):
            raise ValueError(f"{self.name}: {len(self.images)} images but {len(self.captions)} caption lists")
        empty = next((i for i, caps in enumerate(self.captions) if not caps), None)
        if empty is not None:
            raise ValueError(f"{self.name}: image {empty} has no caption")
        if (self.labels is None) != (self.class_prompts is None):
            raise ValueError(f"{self.name}: labels and class_prompts go together")
        if self.labels is not None:
            _check_class_data(self.name, self.labels, self.class_prompts, len(self.images))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classification(self) -> bool:
        """True when the task trains with cross-entropy over its class prompts."""
        return self.labels is not None

    @property
    def setting(self) -> str:
        """The setting whose batches these are (vlcl.settings): ``classification`` with labels, else ``captions``."""
        return "classification" if self.classification else "captions"

    def with_prompts(self, mode: str) -> "CaptionedImages":
        """The same data whose classes keep every template's prompt (``average``) or the first only (``first``)."""
        if self.class_prompts is None or mode == "average":
            return self
        if mode != "first":
            raise ValueError(f"class prompt mode must be 'first' or 'average', got {mode!r}")
        return CaptionedImages(self.name, self.images, self.captions, self.labels, [p[:1] for p in self.class_prompts])


def _check_class_data(name: str, labels: torch.Tensor, prompts: list[list[str]], count: int) -> None:
    if labels.dtype != torch.long or labels.shape != (count,):
        raise ValueError(f"{name}: labels must be long [{count}], got {labels.dtype} {tuple(labels.shape)}")
    if not prompts or any(not p for p in prompts):
        raise ValueError(f"{name}: every class needs at least one prompt")
    if len({len(p) for p in prompts}) != 1:
        raise ValueError(f"{name}: every class needs the same number of prompts (one per template)")
    if count and (int(labels.min()) < 0 or int(labels.max()) >= len(prompts)):
        raise ValueError(f"{name}: labels lie outside the {len(prompts)} classes")


@dataclass
class RetrievalSet:
    """A retrieval test set: every caption points at its image (several captions per image)."""

    setting: ClassVar[str] = "captions"
    """The setting of a benchmark whose tasks are tested on such sets (vlcl.settings)."""
    name: str
    images: Images  # uint8 [N, H, W, 3]
    captions: list[str]
    text_to_image: torch.Tensor  # long [M]

    @classmethod
    def from_caption_lists(cls, name: str, images: Images, captions: list[list[str]]) -> "RetrievalSet":
        flat = [c for caps in captions for c in caps]
        owner = [i for i, caps in enumerate(captions) for _ in caps]
        return cls(name, images, flat, torch.tensor(owner, dtype=torch.long))


@dataclass
class ClassificationSet:
    """A zero-shot classification set: class names and prompt templates containing ``{}``."""

    setting: ClassVar[str] = "classification"
    name: str
    images: Images  # uint8 [N, H, W, 3]
    labels: torch.Tensor  # long [N]
    classnames: list[str]
    templates: list[str]

    def prompts(self) -> list[list[str]]:
        return [[t.format(c) for t in self.templates] for c in self.classnames]


@dataclass
class Task:
    """One step of the sequence. ``test`` is a retrieval set (caption tasks) or, for
    classification tasks (MTIL), a classification set in the task's own label space."""

    name: str
    train: CaptionedImages
    test: RetrievalSet | ClassificationSet
    description: str = ""


@dataclass
class Benchmark:
    """Tasks plus held-out sets. ``zeroshot`` lists every classification set evaluated
    at every stage: the held-out zero-shot sets, then the test sets of classification
    tasks (added here), so the evaluator scores them all with the same code."""

    name: str
    tasks: list[Task]
    heldout_retrieval: list[RetrievalSet] = field(default_factory=list)
    zeroshot: list[ClassificationSet] = field(default_factory=list)
    data_report: dict = field(default_factory=dict)
    """Where the data came from and the bad samples skipped (``data.on_bad_sample=skip``), for results.json."""

    def __post_init__(self) -> None:
        settings = sorted({t.test.setting for t in self.tasks})
        if len(settings) > 1:
            raise ValueError(f"{self.name}: tasks mix the test sets of settings {', '.join(settings)}")
        for task in self.tasks:
            if isinstance(task.test, ClassificationSet) and all(z is not task.test for z in self.zeroshot):
                self.zeroshot.append(task.test)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def setting(self) -> str:
        """The name of the setting its tasks' test sets belong to (vlcl.settings: ``captions``,
        ``classification``, ``modality_pairs``...), which decides how the run trains, scores and reports them.
        A benchmark without tasks (held-out sets only, for evaluation) takes the setting of its held-out sets."""
        sets = [t.test for t in self.tasks] or [*self.heldout_retrieval, *self.zeroshot]
        if not sets:
            raise ValueError(f"{self.name}: a benchmark without tasks or held-out sets has no setting")
        return sets[0].setting

    @property
    def heldout_zeroshot(self) -> list[ClassificationSet]:
        """The zero-shot sets that are no task's test set."""
        tests = {id(t.test) for t in self.tasks}
        return [z for z in self.zeroshot if id(z) not in tests]

    def retrieval_sets(self) -> list[RetrievalSet]:
        return [t.test for t in self.tasks if isinstance(t.test, RetrievalSet)] + list(self.heldout_retrieval)

    def texts_by_set(self) -> dict[str, list[str]]:
        """Every text the model reads, by data set: a task's training captions and class prompts with its test
        set's, then every held-out set's captions or prompts (for the tokenizer coverage check)."""
        texts: dict[str, list[str]] = {}
        for task in self.tasks:
            train = task.train
            if not hasattr(train, "captions"):  # modality pairs: no text
                continue
            texts[task.name] = [c for caps in train.captions for c in caps] + [p for ps in train.class_prompts or [] for p in ps]
            texts[task.name] += _test_texts(task.test)
        for dataset in [*self.heldout_retrieval, *self.heldout_zeroshot]:
            texts[dataset.name] = _test_texts(dataset)
        return texts


def _test_texts(dataset: RetrievalSet | ClassificationSet) -> list[str]:
    if isinstance(dataset, RetrievalSet):
        return list(dataset.captions)
    if isinstance(dataset, ClassificationSet):
        return [p for prompts in dataset.prompts() for p in prompts]
    return []
