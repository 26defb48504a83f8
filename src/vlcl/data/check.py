"""``vlcl data check`` (what a data root holds: found, missing or malformed, per data set) and ``vlcl data prepare`` (where to get each data set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlcl.data.catalogue import DATASETS, FOLDERS, NAMED, BenchmarkSpec, SetSpec, shipped
from vlcl.data.formats import DataError, Sample
from vlcl.data.images import DEFAULT_MAX_IMAGE_PIXELS
from vlcl.data.named import DataRequest, data_root_dir, load_set, validate_data_config
from vlcl.data.sources import MissingDataError, discover


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
    return SetReport(spec.name, role, status, lines, problems)


def check_benchmark(
    name: str,
    root: str | Path,
    *,
    seed: int = 0,
    image_check: str = "header",
    workers: int = 4,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> list[SetReport]:
    """Every data set of benchmark ``name`` under ``root``; ``folders``: every sub-folder, a data set if it has training data, else an evaluation set."""
    selected = validate_data_config(DataRequest(name, root), one_kind=False)
    if selected is None:  # its data root is still checked first, as for a benchmark that reads one
        data_root_dir(root, name)
        raise _not_read_from_a_root(name)
    spec, sets, root = selected.spec, selected.sets, selected.root
    checks = dict(seed=seed, image_check=image_check, workers=workers, max_image_pixels=max_image_pixels)
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
