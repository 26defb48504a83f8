"""The ``vlcl`` command line: run, pretrain, compare, report, export, methods, benchmarks, data.

Every user error ends as one line ``vlcl: error: ...`` on stderr and a
non-zero exit status (2 for bad input, 1 for a failure during the run);
nothing already written is touched before the input has been validated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from vlcl.config import DataConfig, RunConfig, load_config, parse_override
from vlcl.entry import Interrupted, install_signal_handlers, restore_signal_handlers
from vlcl.errors import EXIT_BAD_INPUT, EXIT_RUN_FAILED, VlclError


class CliError(VlclError):
    """The command line's own one-line errors, with the exit status they end with."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = self.exit_code = code


def _split_run_args(items: list[str]) -> tuple[str | None, list[str]]:
    config_path, overrides = None, []
    for i, item in enumerate(items):
        if "=" in item and not item.endswith((".yaml", ".yml")):
            overrides.append(item)
        elif config_path is None and (i == 0 or item.endswith((".yaml", ".yml"))):
            config_path = item
        else:
            raise CliError(f"unexpected argument '{item}': expected one CONFIG.yaml and KEY=VALUE overrides")
    return config_path, overrides


def _run_paths(args: argparse.Namespace, stack: ExitStack) -> tuple[RunConfig, Path, bool]:
    """The config, the run directory (held by this process for the life of ``stack``) and whether the data root
    moved (``--resume`` only)."""
    from vlcl.engine import rundir

    config_path, overrides = _split_run_args(args.items)
    if not args.resume:
        config = load_config(config_path, overrides)
        run_dir = Path(args.output) if args.output else Path(config.output_dir) / config.run_name
        rundir.check_writable_parent(run_dir)
        stack.enter_context(rundir.hold(run_dir))  # before anything is written, the recovery of an --overwrite included
        _recover(run_dir)
        rundir.check_available(run_dir, resume=False, overwrite=args.overwrite, config=config)  # before loading anything
        return config, run_dir, False
    if args.overwrite or args.output:
        raise CliError("--resume RUN_DIR cannot be combined with --overwrite or -o")
    if config_path:
        raise CliError("--resume takes the config from the run directory; pass only KEY=VALUE overrides")
    run_dir = Path(args.resume)
    if not run_dir.parent.is_dir():
        raise CliError(f"{run_dir}: run directory to resume not found")
    stack.enter_context(rundir.hold(run_dir))
    _recover(run_dir)
    if not run_dir.is_dir():
        raise CliError(f"{run_dir}: run directory to resume not found")
    config, root_moved = rundir.resume_config(run_dir, overrides)
    return config, run_dir, root_moved


def _recover(run_dir: Path) -> None:
    """Finish an interrupted ``--overwrite`` (see vlcl.engine.rundir); under torchrun only rank 0 touches files."""
    from vlcl.engine import rundir

    _say(rundir.recover_on_main(run_dir))


def _say(note: str | None) -> None:
    if note:
        print(f"vlcl: {note}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        return _run_held(args, stack)


def _run_held(args: argparse.Namespace, stack: ExitStack) -> int:
    from vlcl.api import execute_run
    from vlcl.report import render_console

    config, run_dir, root_moved = _run_paths(args, stack)

    def interrupted(exc: BaseException, restored: str | None) -> None:
        if isinstance(exc, Interrupted):
            if restored:
                raise CliError(f"interrupted by {exc.name}; the previous run is kept", exc.code) from None
            raise CliError(f"interrupted by {exc.name}; the last complete checkpoint is kept: vlcl run --resume {run_dir}", exc.code) from None

    outcome = execute_run(
        config, run_dir, resume=bool(args.resume), overwrite=args.overwrite, root_moved=root_moved, on_failure=interrupted
    )
    if not outcome.is_main:
        return 0
    out = Console()
    render_console(outcome.results, Console(width=max(out.width, 160)))
    report = outcome.report if outcome.report else "not written (see the warning above)"
    print(f"results: {run_dir / 'results.json'}, report: {report}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vlcl.compare import LR_GRID, CompareError, Tuning, compare, parse_floats, parse_methods, parse_seeds

    config_path, overrides = _split_run_args(args.items)
    tune_flags = [
        (flag, value)
        for flag, value in (
            ("--tune-lrs", args.tune_lrs),
            ("--tune-tasks", args.tune_tasks),
            ("--tune-scale", args.tune_scale),
            ("--tune-epochs", args.tune_epochs),
            ("--validation-fraction", args.validation_fraction),
            ("--tune-objective", args.tune_objective),
        )
        if value is not None
    ]
    try:
        specs = parse_methods(args.methods)
        seeds = parse_seeds(args.seeds) if args.seeds is not None else None
        if tune_flags and not args.tune:
            raise CompareError(f"{tune_flags[0][0]} sets how methods are tuned: add --tune")
        tuning = None
        if args.tune:
            defaults = Tuning()
            tasks = args.tune_tasks
            tuning = Tuning(
                lrs=parse_floats(args.tune_lrs, "--tune-lrs") if args.tune_lrs is not None else LR_GRID,
                tasks=defaults.tasks if tasks is None else None if tasks in ("0", "all") else _int_flag("--tune-tasks", tasks),
                scale=defaults.scale if args.tune_scale is None else args.tune_scale,
                epochs=args.tune_epochs,
                validation_fraction=defaults.validation_fraction if args.validation_fraction is None else args.validation_fraction,
                objective=defaults.objective if args.tune_objective is None else args.tune_objective,
            )
        config = load_config(config_path, overrides)
        out_dir = Path(args.output) if args.output else Path(config.output_dir) / f"compare-{config.data.benchmark}"
        command = "vlcl compare " + " ".join([*args.items, "--methods", f"'{args.methods}'", "-o", str(out_dir)])
        if args.jobs != 1:
            command += f" --jobs {args.jobs}"
        if seeds is not None:
            command += f" --seeds {','.join(map(str, seeds))}"
        if args.tune:
            command += " --tune" + "".join(f" {flag} {value}" for flag, value in tune_flags)
        compare(config_path, overrides, specs, out_dir, command, Console(stderr=True), jobs=args.jobs, seeds=seeds, tuning=tuning)
    except CompareError as exc:
        raise CliError(str(exc)) from None
    except Interrupted as exc:
        raise CliError(f"interrupted by {exc.name}; the same command continues the comparison (finished methods are kept)", exc.code) from None
    print((out_dir / "leaderboard.md").read_text(encoding="utf-8"))
    return 0


def _int_flag(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CliError(f"{flag} {text}: expected a whole number (0 or 'all': every task)") from None


def _pretrain_value(key: str, value: Any, kind: type) -> int | float:
    """A pretrain setting's value: an integer (>= 1, the seed >= 0) or a finite number >= 0 (lr > 0)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise CliError(f"pretrain setting '{key}': expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise CliError(f"pretrain setting '{key}': expected a finite number, got {value!r}")
    low = 0 if key in ("seed", "weight_decay", "warmup_fraction") else (1 if kind is int else 0)
    if value < low or (key == "lr" and value <= 0) or (key == "warmup_fraction" and value >= 1):
        raise CliError(f"pretrain setting '{key}': {value!r} is out of range")
    return kind(value)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from vlcl.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings()
    for item in args.overrides:
        key, value = parse_override(item)
        if not hasattr(settings, key):
            raise CliError(f"unknown pretrain setting '{key}'; valid: {', '.join(vars(settings))}")
        setattr(settings, key, _pretrain_value(key, value, type(getattr(settings, key))))
    stats = pretrain(args.output, settings)
    print(f"pretrained model written to {args.output} ({stats['steps']} steps, {stats['seconds']:.0f} s, final loss {stats['final_loss']:.3f})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Markdown (printed, or ``-o X.md``) or a self-contained HTML page with plots (``-o X.html``, PNGs beside it in
    ``X_plots/``) of run directories and comparison directories (each standing for its finished runs). An ``-o``
    that cannot be written whole is refused in one line before anything is written."""
    from vlcl.report import comparison_markdown
    from vlcl.report.files import ReportError, check_output, find_runs

    if args.output:
        check_output(args.output)
    if args.output and Path(args.output).suffix.lower() in (".html", ".htm"):
        from vlcl.report.html import report_paths

        written = report_paths(args.run_dirs, args.output)
        print(f"report: {written.page} ({written.size / 1024:.0f} KB), plots: {len(written.plots)} PNG files in {written.plot_dir}")
        return 0
    found, notes = find_runs(args.run_dirs)
    for note in notes:
        print(f"vlcl: {note}", file=sys.stderr)
    try:
        text = comparison_markdown([run.results for run in found], [run.name for run in found])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        bad = next((run for run in found if _unreportable(comparison_markdown, run.results)), None)
        where = f"{bad.name}: results.json" if bad else "the runs' results"
        raise ReportError(f"{where} lacks what a report needs ({exc.__class__.__name__}: {exc})") from None
    if args.output:
        from vlcl.fileio import atomic_write_text

        check_output(args.output, found)
        atomic_write_text(args.output, text)
    else:
        print(text)
    return 0


def _unreportable(render: Any, results: dict) -> bool:
    """Whether ``render([results])`` fails on a malformed results dict (to name the run that does)."""
    try:
        render([results])
    except (KeyError, TypeError, IndexError, AttributeError, ValueError):
        return True
    return False


def cmd_methods(args: argparse.Namespace) -> int:
    from vlcl.methods import list_methods, method_class

    for name in list_methods():
        print(f"{name:12s} {method_class(name).description}")
    return 0


def cmd_benchmarks(args: argparse.Namespace) -> int:
    from vlcl.data.registry import list_benchmarks

    for name, description in list_benchmarks().items():
        print(f"{name:12s} {description}")
    return 0


def _tokenizer_check(model_path: str):
    """The run's own loading and checks of ``model_path`` (a model a run would refuse is refused here), as the
    :data:`vlcl.data.check.TextCheck` of ``vlcl data check --model``."""
    from vlcl.models.coverage import coverage, indistinguishable_classes
    from vlcl.models.loading import load_clip

    bundle = load_clip(model_path)

    def check(texts, prompts):
        groups = indistinguishable_classes(bundle.tokenizer, prompts, bundle.context_length) if prompts is not None else []
        return coverage(bundle.tokenizer, texts), groups

    return check


def cmd_data_check(args: argparse.Namespace) -> int:
    from vlcl.data.check import check_benchmark, coverage_fails, coverage_lines

    root = Path(args.data_root).expanduser()
    if not root.is_dir():
        raise CliError(f"{root}: data root not found")
    if not 0 <= args.max_unknown_words <= 1:
        raise CliError(f"--max-unknown-words must lie in [0, 1], got {args.max_unknown_words:g}")
    text_check = _tokenizer_check(args.model) if args.model else None
    limit = None if args.max_image_pixels == 0 else args.max_image_pixels
    reports = check_benchmark(
        args.benchmark, root, seed=args.seed, image_check=args.image_check, workers=args.workers, max_image_pixels=limit,
        text_check=text_check,
    )
    model = f", tokenizer of {args.model}" if args.model else ""
    print(f"{args.benchmark} in {root} (image check: {args.image_check}{model})")
    for report in reports:
        print(f"{report.name:12s} {report.status:10s} {report.role}")
        for line in report.lines:
            print(f"    {line}")
        for problem in report.problems:
            print(f"    problem: {problem}")
        for line in coverage_lines(report, args.max_unknown_words):
            print(f"    {line}")
    counts = {status: sum(r.status == status for r in reports) for status in ("found", "missing", "malformed")}
    unread = [r.name for r in reports if coverage_fails(r, args.max_unknown_words)]
    words = f", {len(unread)} the tokenizer cannot read" if args.model else ""
    print(f"{counts['found']} found, {counts['missing']} missing, {counts['malformed']} malformed{words}")
    if counts["missing"] or counts["malformed"]:
        print(f"see `vlcl data prepare {args.benchmark}` for sources and layouts; data.on_bad_sample=skip runs past bad samples")
    if unread:
        print(f"a run with this model stops on {', '.join(unread)}: use a model whose tokenizer reads their words")
    return EXIT_RUN_FAILED if counts["missing"] or counts["malformed"] or unread else 0


def cmd_export(args: argparse.Namespace) -> int:
    from vlcl.export import export_run

    loaded = export_run(args.run_dir, args.output, args.stage)
    print(
        f"exported {args.run_dir} after stage {loaded.stage} ({loaded.stage_name}, method {loaded.method_name}) to {args.output}: "
        "CLIPModel, AutoTokenizer and CLIPImageProcessor .from_pretrained read it"
    )
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from vlcl.data.check import prepare_text

    print(prepare_text(args.benchmark), end="")
    return 0


def _named_benchmarks(*, folders: bool = True) -> list[str]:
    """The benchmarks read from a data root (``folders``: your own data sets, one sub-folder each)."""
    from vlcl.data.benchmarks.catalogue import FOLDERS, NAMED

    return [*NAMED, FOLDERS] if folders else list(NAMED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlcl", description="Continual learning of CLIP models.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a method through a benchmark's task sequence")
    run.add_argument("items", nargs="*", metavar="[CONFIG.yaml] [KEY=VALUE ...]")
    run.add_argument("-o", "--output", help="run directory (default: <output_dir>/<name>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run after its last complete stage")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    run.set_defaults(func=cmd_run)
    pre = sub.add_parser("pretrain", help="reproduce the small CLIP shipped with vlcl")
    pre.add_argument("-o", "--output", required=True, help="output model directory")
    pre.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings of vlcl.pretrain.PretrainSettings")
    pre.set_defaults(func=cmd_pretrain)
    cmp = sub.add_parser(
        "compare", help="run several methods on the same benchmark and seed(s), tuned alike with --tune, write a leaderboard"
    )
    cmp.add_argument("items", nargs="*", metavar="[CONFIG.yaml] [KEY=VALUE ...]")
    cmp.add_argument("--methods", required=True, help="comma-separated, e.g. 'zeroshot,finetune,cclip[train.lr=5e-4]'")
    cmp.add_argument("-o", "--output", help="comparison directory (default: <output_dir>/compare-<benchmark>)")
    cmp.add_argument(
        "-j", "--jobs", type=int, default=1,
        help="runs (methods, seeds, grid points) at a time, in worker processes sharing the CPU threads (default 1: one after the other)",
    )
    cmp.add_argument("--seeds", metavar="S,S,...", help="run every method at each of these seeds (seed=S); several: mean +- std per column")
    cmp.add_argument(
        "--tune", action="store_true",
        help="first tune every method that trains (learning rate x its own grid) on a validation split of a cheaper proxy (docs/tuning.md)",
    )
    cmp.add_argument("--tune-lrs", metavar="LR,LR,...", help="learning rates of the tuning grid (default 3e-5,1e-4,3e-4,1e-3)")
    cmp.add_argument("--tune-tasks", metavar="K", help="the proxy trains the first K tasks (default 3; 0 or 'all': every task)")
    cmp.add_argument("--tune-scale", type=float, metavar="F", help="the proxy's data.train_scale is the config's times F (default 0.25)")
    cmp.add_argument("--tune-epochs", type=int, metavar="E", help="train.epochs of the proxy (default: the config's)")
    cmp.add_argument(
        "--validation-fraction", type=float, metavar="F",
        help="share of each task's training data carved as its validation set while tuning (default 0.2)",
    )
    cmp.add_argument(
        "--tune-objective", choices=("last", "avg"),
        help="what a grid point is scored by on validation: Last (default; forgetting counts) or Avg",
    )
    cmp.set_defaults(func=cmd_compare)
    report = sub.add_parser(
        "report", help="Markdown leaderboard and matrices of finished runs, or an HTML page with plots (-o X.html; docs/report.md)"
    )
    report.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR|COMPARE_DIR",
        help="run directories, and comparison directories of vlcl compare (each stands for its finished runs)",
    )
    report.add_argument(
        "-o", "--output",
        help="X.html: a self-contained page, its plots also as PNGs in X_plots/; any other name: the Markdown (default: printed)",
    )
    report.set_defaults(func=cmd_report)
    export = sub.add_parser(
        "export", help="write the model a run scored after a stage as a plain Hugging Face CLIP directory (transformers alone loads it)"
    )
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--stage", metavar="N", help="a stage's index in results.json (-1: pretrained) or name (default: the last complete stage)")
    export.add_argument("-o", "--output", required=True, metavar="DIR", help="a new (or empty) directory")
    export.set_defaults(func=cmd_export)
    sub.add_parser("methods", help="list registered methods").set_defaults(func=cmd_methods)
    sub.add_parser("benchmarks", help="list registered benchmarks").set_defaults(func=cmd_benchmarks)
    for command in (run, cmp):
        command.add_argument("--data-root", metavar="DIR", help="folder of the real data sets (same as data.root=DIR)")
        command.add_argument(
            "--allow-unknown-words",
            action="store_true",
            help="train even when the tokenizer reads few of the data's words (same as data.max_unknown_words=1)",
        )
    data = sub.add_parser("data", help="real data sets of the named benchmarks: check a data root, how to prepare one")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser(
        "check", help="per data set: found, missing or malformed, counts, first problems; with --model, tokenizer coverage"
    )
    check.add_argument("benchmark", choices=_named_benchmarks())
    check.add_argument("--data-root", required=True, metavar="DIR")
    check.add_argument("--image-check", choices=("none", "header", "full"), default="header", help="open image headers (default), decode fully, or skip")
    check.add_argument("--seed", type=int, default=0, help="data.seed of the random splits")
    check.add_argument("--workers", type=int, default=4, help="threads opening images")
    check.add_argument(
        "--max-image-pixels", type=int, default=89_478_485, metavar="N",
        help="images with more pixels are problems, as data.max_image_pixels (0: no limit; default %(default)s)",
    )
    check.add_argument("--model", metavar="PATH", help="also check each set's text against this model's tokenizer (as model.path)")
    check.add_argument(
        "--max-unknown-words", type=float, default=DataConfig.model_fields["max_unknown_words"].default, metavar="F",
        help="with --model: the share of unknown words above which a run stops, as data.max_unknown_words (default %(default)s)",
    )
    check.set_defaults(func=cmd_data_check)
    prepare = data_sub.add_parser("prepare", help="where to get each data set and the layout vlcl expects")
    prepare.add_argument("benchmark", choices=_named_benchmarks(folders=False))
    prepare.set_defaults(func=cmd_data_prepare)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Options and KEY=VALUE overrides in any order: ``vlcl run --data-root DIR train.epochs=2`` as well as
    ``vlcl run train.epochs=2 --data-root DIR`` (argparse alone stops collecting positionals at the first option)."""
    args, extra = parser.parse_known_args(argv)
    field = next((name for name in ("items", "overrides") if hasattr(args, name)), None)
    stray = [item for item in extra if item.startswith("-") or ("=" not in item and not item.endswith((".yaml", ".yml")))]
    if stray or (extra and field is None):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        setattr(args, field, [*getattr(args, field), *extra])
    return args


def main(argv: list[str] | None = None) -> int:
    previous = install_signal_handlers()
    try:
        return _main(argv)
    finally:
        restore_signal_handlers(previous)


def _main(argv: list[str] | None) -> int:
    try:
        args = _parse(build_parser(), argv)
        if getattr(args, "data_root", None) and hasattr(args, "items"):  # run / compare: --data-root DIR = data.root=DIR
            args.items = [*args.items, f"data.root={json.dumps(str(args.data_root))}"]
        if getattr(args, "allow_unknown_words", False):
            args.items = [*args.items, "data.max_unknown_words=1"]
        return args.func(args)
    except Interrupted as exc:
        message, code = f"interrupted by {exc.name}", exc.code
    except KeyboardInterrupt:  # SIGINT before the handler was installed
        message, code = "interrupted", 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit:  # argparse has printed its own one-line usage error
        raise
    except VlclError as exc:  # every layer's one-line error (vlcl.errors)
        message, code = str(exc), exc.exit_code
    except Exception as exc:
        if isinstance(exc, OSError) and exc.strerror:  # disk full, permission denied: the file and the reason
            message, code = f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror}", EXIT_RUN_FAILED
        else:
            raise
    print(f"vlcl: error: {message}", file=sys.stderr)
    return code
