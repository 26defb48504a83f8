"""``vlcl data check`` (what a data root holds: found, missing or malformed, per data set; with a model, how much of
each set's text its tokenizer reads) and ``vlcl data prepare`` (where to get each data set)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vlcl.data.benchmarks.catalogue import DATASETS, FOLDERS, NAMED, BenchmarkSpec, SetSpec, shipped
from vlcl.data.benchmarks.data_root import DataRequest, LoadedSet, data_root_dir, load_set, validate_data_config
from vlcl.data.formats import DataError, Sample
from vlcl.data.formats.detect import MissingDataError, discover
from vlcl.data.images import DEFAULT_MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    from vlcl.models.coverage import Coverage

TextCheck = Callable[[list[str], "list[list[str]] | None"], "tuple[Coverage, list[list[int]]]"]
"""Reads a set's texts and, for a classification set, its prompts per class, with a model's tokenizer: the
coverage of the texts and the groups of classes whose prompts encode alike. The command line builds it from
:mod:`vlcl.models.coverage` (a layer above the data's), so this module never loads a model."""


def _not_read_from_a_root(name: str) -> DataError:
    return DataError(f"'{name}' is not a benchmark read from a data root; those are: {', '.join(NAMED)}")


def named_spec(name: str) -> BenchmarkSpec:
    if name not in NAMED:
        raise _not_read_from_a_root(name)
    return NAMED[name]


@dataclass
class SetReport:
    name: str
    role: str
    status: Literal["found", "missing", "malformed"]
    lines: list[str]
    problems: list[str]
    coverage: Coverage | None = None
    """With a tokenizer: the unknown words of the set's captions and class prompts, as a run counts them."""
    indistinguishable: list[list[str]] | None = None
    """With a tokenizer: groups of class names whose prompts encode to the same tokens (a run refuses them)."""


def _count(samples: list[Sample] | None, labels: bool) -> str:
    if samples is None:
        return "-"
    if labels:
        return f"{len(samples)} images, {len({s.label for s in samples})} classes"
    return f"{len(samples)} images, {sum(len(s.captions) for s in samples)} captions"


def check_set(
    spec: SetSpec,
    root: Path,
    role: str,
    *,
    want_train: bool,
    seed: int,
    image_check: str,
    workers: int,
    show: int = 5,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    text_check: TextCheck | None = None,
) -> SetReport:
    try:
        loaded = load_set(
            spec,
            root,
            want_train=want_train,
            seed=seed,
            on_bad_sample="skip",
            image_check=image_check,
            workers=workers,
            max_image_pixels=max_image_pixels,
        )
    except MissingDataError as exc:
        return SetReport(spec.name, role, "missing", [], [str(exc)])
    except DataError as exc:
        return SetReport(spec.name, role, "malformed", [], [str(exc)])
    labels = spec.kind == "labels"
    lines = []
    for split, samples in (("train", loaded.train), ("test", loaded.test)):
        if split in loaded.sources:
            lines.append(f"{split}: {_count(samples, labels)} <- {loaded.sources[split]}")
    lines += loaded.notes
    problems = list(loaded.problems.messages[:show])
    if loaded.problems.count > show:
        problems.append(f"... and {loaded.problems.count - show} more")
    status = "malformed" if loaded.problems.count else "found"
    report = SetReport(spec.name, role, status, lines, problems)
    if text_check is not None:
        prompts = class_prompts(loaded) if loaded.classnames is not None else None
        report.coverage, groups = text_check(set_texts(loaded), prompts)
        if loaded.classnames is not None:
            report.indistinguishable = [[loaded.classnames[i] for i in group] for group in groups]
    return report


def class_prompts(loaded: LoadedSet) -> list[list[str]]:
    """Per class, its prompts: every template filled with the class name (vlcl.data.samples)."""
    return [[t.format(c) for t in loaded.templates] for c in loaded.classnames]


def set_texts(loaded: LoadedSet) -> list[str]:
    """Every text a run reads of the set, as :meth:`vlcl.data.benchmark.Benchmark.texts_by_set` gathers it for the
    run's coverage check: training captions (a classification set's: each image's class in the first template)
    and class prompts, then the test set's captions or class prompts."""
    if loaded.classnames is None:
        return [c for samples in (loaded.train or [], loaded.test) for s in samples for c in s.captions]
    prompts = [p for ps in class_prompts(loaded) for p in ps]
    texts = [loaded.templates[0].format(loaded.classnames[s.label]) for s in loaded.train or []]
    return texts + (prompts if loaded.train is not None else []) + prompts


def check_benchmark(
    name: str,
    root: str | Path,
    *,
    seed: int = 0,
    image_check: str = "header",
    workers: int = 4,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    text_check: TextCheck | None = None,
) -> list[SetReport]:
    """Every data set of benchmark ``name`` under ``root``; ``folders``: every sub-folder, a data set if it has training data, else an evaluation set.
    With ``text_check``, also each set's tokenizer coverage."""
    selected = validate_data_config(DataRequest(name, root), one_kind=False)
    if selected is None:  # its data root is still checked first, as for a benchmark that reads one
        data_root_dir(root, name)
        raise _not_read_from_a_root(name)
    spec, sets, root = selected.spec, selected.sets, selected.root
    checks = dict(
        seed=seed, image_check=image_check, workers=workers, max_image_pixels=max_image_pixels, text_check=text_check
    )
    reports = []
    for set_name in spec.all_sets():
        if name == FOLDERS:
            trained = bool({"train", "all"} & set(discover(root / set_name)))
            kind = "classification" if sets[set_name].kind == "labels" else "captions"
            role = f"{'data set' if trained else 'evaluation set'}, {kind}"
        else:
            trained = set_name in spec.tasks
            role = "task" if trained else "held-out retrieval" if set_name in spec.heldout else "zero-shot"
        reports.append(check_set(sets[set_name], root, role, want_train=trained, **checks))
    return reports


def coverage_lines(report: SetReport, limit: float) -> list[str]:
    """What ``vlcl data check --model`` says of one set's text: its share of unknown words against ``limit``
    (``data.max_unknown_words``) and the classes the tokenizer cannot tell apart."""
    lines = []
    found = report.coverage
    if found is not None:
        examples = f" (e.g. {', '.join(repr(w) for w in found.examples)})" if found.examples else ""
        verdict = f"above data.max_unknown_words={limit:g}: a run stops" if found.unknown_share > limit else "ok"
        lines.append(
            f"tokenizer: {found.unknown_share:.1%} of {found.words} caption and prompt words unknown{examples}; {verdict}"
        )
    for group in report.indistinguishable or []:
        lines.append(f"tokenizer: classes {', '.join(repr(n) for n in group)} encode to the same tokens: a run stops")
    return lines


def coverage_fails(report: SetReport, limit: float) -> bool:
    return bool(report.indistinguishable) or (report.coverage is not None and report.coverage.unknown_share > limit)


def prepare_text(name: str) -> str:
    spec = named_spec(name)
    out = [
        f"{spec.name}: {spec.description}",
        f"reference: {spec.reference}",
        "",
        "Put every data set in its own folder under one data root (ROOT below) and run with data.root=ROOT",
        "(or --data-root ROOT). Any format `vlcl data check` recognises works; the layouts below are the usual ones.",
        f"Check with: vlcl data check {spec.name} --data-root ROOT",
        "",
    ]
    for set_name in spec.all_sets():
        s = DATASETS[set_name]
        role = (
            "task" if set_name in spec.tasks else "held-out retrieval" if set_name in spec.heldout else "zero-shot classification"
        )
        out += [f"{set_name} ({s.title}; {role})", f"  source: {s.source}", f"  layout: {s.layout}", f"  splits: {s.splits}"]
        if s.captions:
            out.append(f"  caption field: {s.captions[0]}")
        if s.classes:
            count = len(shipped("classnames")[s.classes])
            out.append(f"  class names and templates: shipped ({count} OpenAI class names), or the folder's own classnames.txt")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
