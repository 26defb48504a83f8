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
