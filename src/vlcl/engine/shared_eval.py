"""The pre-trained row, evaluated once for all the runs of a comparison that share it.

Every run starts by evaluating the model before any training: the ``pretrained`` row of the task x stage
matrix, which zero-shot retention and Transfer are measured against. In a comparison most runs evaluate the
same weights on the same data with the same settings, so ``vlcl compare`` gives its runs one directory where
the first run to evaluate a pre-trained row stores it and the others read it (benchmarks/RESULTS.md measures
what this saves).

A stored row is used only when everything it depends on is the same, by construction rather than by
convention. Its key is a SHA-256 over:

- every tensor of the evaluation model (name, dtype, shape and bytes) and the model's config, so a method
  that adds or initialises weights before its first task (LoRA's random A, an adapter) has a key of its own;
- the fingerprint of the evaluation data (:func:`vlcl.data.fingerprint.evaluation_fingerprint`);
- the ``eval`` and ``model`` config sections, the device, the torch version and the thread count (threads
  change the order of floating-point sums, and so the last bits of a score).

A method that changes the evaluation itself (``evaluation_route`` or ``classification_logits``, e.g. a router
or a classifier of its own) evaluates its own row and stores nothing. So does a run under torchrun, whose
processes would each have to agree on a file. A stored row is the JSON of the same metrics the run would
have computed: a second run that evaluates instead of reading gets the same numbers (tests/test_shared_eval.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlcl.fileio import atomic_write_text
from vlcl.methods import Method


def changes_evaluation(method: Method) -> bool:
    """Whether ``method`` overrides either evaluation hook of :class:`~vlcl.methods.Method`."""
    kind = type(method)
    return any(getattr(kind, hook) is not getattr(Method, hook) for hook in ("evaluation_route", "classification_logits"))


def _update_model(digest: Any, model: torch.nn.Module) -> None:
    config = getattr(model, "config", None)
    digest.update(f"{type(model).__name__}\0{config.to_json_string() if config is not None else ''}\0".encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\0".encode())
        if data.numel():  # the bytes in place, not a copy of them
            digest.update(data.reshape(-1).view(torch.uint8).numpy())


def pretrained_key(model: torch.nn.Module, data_fingerprint: str, settings: dict[str, Any]) -> str:
    """The hex key of a pre-trained row: the model's tensors, the evaluation data and ``settings``."""
    digest = hashlib.sha256()
    facts = {"data": data_fingerprint, "torch": torch.__version__, "threads": torch.get_num_threads(), **settings}
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    _update_model(digest, model)
    return digest.hexdigest()


def _path(directory: Path, key: str) -> Path:
    return Path(directory) / f"pretrained-{key}.json"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_problem(stored: Any, key: str) -> str | None:
    """What makes ``stored`` (a parsed store file) not a pre-trained row of ``key``, or None: the key, the three
    sections of an evaluation (retrieval, alignment, zeroshot) with at least one set, each retrieval set with
    ``mean_R@1`` and its recalls as numbers, each zero-shot set with its ``top1``, each alignment set with numbers."""
    if not isinstance(stored, dict) or stored.get("key") != key:
        return "not a stored row of this key"
    metrics = stored.get("metrics")
    if not isinstance(metrics, dict):
        return "no 'metrics' object"
    for section in ("retrieval", "alignment", "zeroshot"):
        if not isinstance(metrics.get(section), dict):
            return f"'metrics.{section}' is missing or not an object"
    if not metrics["retrieval"] and not metrics["zeroshot"]:
        return "no evaluated set"
    required = {"retrieval": "mean_R@1", "zeroshot": "top1", "alignment": None}
    for section, must in required.items():
        for name, values in metrics[section].items():
            where = f"metrics.{section}.{name}"
            if not isinstance(values, dict) or (must is not None and must not in values):
                return f"'{where}' is not an object with '{must}'" if must else f"'{where}' is not an object"
            scores = [k for k in values if k == must or "R@" in k or section == "alignment"]  # what the run reads as numbers
            wrong = next((k for k in scores if not _is_number(values[k])), None)
            if wrong is not None:
                return f"'{where}.{wrong}' is not a number"
    return None


def read_shared(directory: Path, key: str, say: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The stored metrics of ``key``; None when none is stored or the file cannot be read or is not a valid row
    (then the run evaluates, and stores its own). A file that is there but unusable is one line to ``say``
    (default: stderr) naming it."""
    path = _path(directory, key)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problem: str | None = f"cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})"
    else:
        problem = row_problem(stored, key)
    if problem is None:
        return stored["metrics"]
    (say or (lambda line: print(line, file=sys.stderr)))(
        f"vlcl: {path}: {problem}; the pre-trained row is evaluated again and the file replaced"
    )
    return None


def store_shared(directory: Path, key: str, metrics: dict[str, Any], run: str) -> None:
    """Store the metrics of ``key`` atomically (two runs storing the same key write the same numbers)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_text(_path(directory, key), json.dumps({"key": key, "evaluated_by": run, "metrics": metrics}))
