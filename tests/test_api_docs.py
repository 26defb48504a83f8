"""docs/api.md runs as written: every ```python block, in order, in one fresh Python process started in a temporary
folder (as a user pasting them would), so the documented API is the tested API. A separate process keeps the method
the page registers out of this process's registry."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
PAGE = REPOSITORY / "docs" / "api.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_the_page_has_an_example_of_each_part_of_the_api():
    code = "\n".join(python_blocks())
    for call in ("vlcl.run(", "resume=True", "vlcl.load_run(", ".encode_images(", ".encode_texts(", ".classify(", ".route(",
                 "vlcl.retrieval_recall(", "vlcl.continual_summary(", "vlcl.zeroshot_accuracy(", "@vlcl.register_method"):
        assert call in code or call in PAGE.read_text(encoding="utf-8"), call


@pytest.mark.slow
def test_every_python_block_of_docs_api_md_runs(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 8
    script = "\n\n".join(f"# --- block {i + 1} of docs/api.md\n{block}" for i, block in enumerate(blocks))
    (tmp_path / "api_examples.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "api_examples.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    out = result.stdout
    assert "run directory already exists; use resume=True to continue it or overwrite=True to replace it" in out
    assert "unknown method 'fintune' (did you mean 'finetune'?)" in out
    assert "no complete stage 'texture'; stages that can be loaded: -1 (pretrained), 0 (sketch), 1 (counting)" in out
    assert "method name 'finetune' is taken by vlcl.methods.finetune.FineTune; give MyFinetune another name" in out
    assert "{'i2t_R@1': 100.0, 'i2t_R@2': 100.0, 't2i_R@1': 50.0, 't2i_R@2': 100.0}" in out
    assert (tmp_path / "runs" / "api-mine" / "results.json").is_file()
