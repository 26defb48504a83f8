"""What reads a run's files needs neither torch nor transformers: `vlcl` and `vlcl.report` (tables, the results
files, the HTML page) import in a fresh process without them, so a report of finished runs starts fast."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("modules", ["vlcl", "vlcl.report", "vlcl.report.files, vlcl.report.html, vlcl.report.tables", "vlcl.fileio"])
def test_imports_without_torch_or_transformers(modules):
    probe = f"import sys, {modules}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_results_record_their_format_and_older_files_are_read(tmp_path):
    """A run writes ``format``; a results.json without one (format 1, before it was recorded) is still read."""
    import json

    from vlcl.report.files import read_results
    from vlcl.schema import RESULTS_FORMAT, results_format

    assert RESULTS_FORMAT == 3 and results_format({}, "x") == 1 and results_format({"format": 2}, "x") == 2
    from vlcl.report.files import REQUIRED_KEYS

    older = {key: kind() for key, kind in REQUIRED_KEYS.items()}  # every key a report needs, and no 'format'
    older.update(method="finetune", benchmark="embedded", stages=[{"name": "pretrained", "metrics": {}}])
    (tmp_path / "results.json").write_text(json.dumps(older))
    assert read_results(tmp_path)["method"] == "finetune"
