"""Every error that reaches the user as one line derives from vlcl.errors.VlclError, which the command line catches
(exit 2 for bad input, 1 for a run that failed), and keeps the built-in base that code may catch."""

from __future__ import annotations

import importlib

import pytest

from vlcl.errors import BadInputError, RunFailedError, VlclError

ERRORS = [
    ("vlcl.app.cli", "CliError", VlclError, Exception),
    ("vlcl.app.compare", "CompareError", BadInputError, ValueError),
    ("vlcl.config", "ConfigError", BadInputError, ValueError),
    ("vlcl.plugins", "PluginError", BadInputError, ImportError),
    ("vlcl.report.files", "ReportError", BadInputError, ValueError),
    ("vlcl.engine.loop", "RunInputError", BadInputError, ValueError),
    ("vlcl.engine.rundir", "RunDirError", BadInputError, ValueError),
    ("vlcl.engine.checkpoint", "CheckpointError", BadInputError, ValueError),
    ("vlcl.methods.registry", "UnknownMethodError", BadInputError, ValueError),
    ("vlcl.models.loading", "ModelLoadError", BadInputError, RuntimeError),
    ("vlcl.data.registry", "UnknownBenchmarkError", BadInputError, ValueError),
    ("vlcl.data.images", "DataError", BadInputError, ValueError),
    ("vlcl.data.formats.detect", "MissingDataError", BadInputError, ValueError),
    ("vlcl.data.benchmarks.feature_pairs", "FeatureDataError", BadInputError, ValueError),
    ("vlcl.export", "ExportError", BadInputError, ValueError),
    ("vlcl.metrics.retrieval", "NonFiniteError", RunFailedError, ValueError),
    ("vlcl.engine.train", "NonFiniteLossError", RunFailedError, RuntimeError),
    ("vlcl.engine.results", "ResultsError", RunFailedError, RuntimeError),
]


@pytest.mark.parametrize(("module", "name", "kind", "builtin"), ERRORS, ids=[e[1] for e in ERRORS])
def test_each_one_line_error_has_the_one_base(module, name, kind, builtin):
    error = getattr(importlib.import_module(module), name)
    assert issubclass(error, kind) and issubclass(error, builtin)
    assert error.exit_code == (1 if kind is RunFailedError else 2)


def test_the_command_line_prints_any_vlcl_error_as_one_line(monkeypatch, capsys):
    from vlcl.app import cli

    class LabError(BadInputError):
        pass

    def fail(args):
        raise LabError("lab.yaml: line 3: 'epochs' expected a whole number")

    monkeypatch.setattr(cli, "cmd_methods", fail)
    assert cli.main(["methods"]) == 2
    assert capsys.readouterr().err == "vlcl: error: lab.yaml: line 3: 'epochs' expected a whole number\n"
