"""benchmarks/compare_profile.py on a comparison directory it cannot read: one line naming the file and the
line, exit 2 (a torn last line of timeline.jsonl, as a killed comparison leaves, is skipped with a note)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION = json.dumps({"event": "session", "started": 100.0, "jobs": 2})
RUN = json.dumps({"event": "run", "run": "finetune", "phase": "final", "started": 101.0, "ended": 150.0, "status": "done"})


def profile_module():
    spec = importlib.util.spec_from_file_location("compare_profile_input", ROOT / "benchmarks" / "compare_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timeline(tmp_path: Path, content: bytes) -> Path:
    (tmp_path / "timeline.jsonl").write_bytes(content)
    return tmp_path


CASES = {
    "not_utf8": (b"%s\n\xff\xfe{}\n%s\n" % (SESSION.encode(), RUN.encode()), r"timeline.jsonl:2: is not UTF-8 text"),
    "not_json": (f"{SESSION}\n{{oops\n{RUN}\n".encode(), r"timeline.jsonl:2: is not valid JSON"),
    "not_an_object": (f"{SESSION}\n[1, 2]\n{RUN}\n".encode(), r"timeline.jsonl:2: not a timeline record"),
    "unknown_event": (f"{SESSION}\n{{\"event\": \"lunch\"}}\n".encode(), r"timeline.jsonl:2: not a timeline record"),
    "missing_field": (f"{SESSION}\n{{\"event\": \"run\", \"run\": \"x\"}}\n".encode(), r"timeline.jsonl:2: not a timeline record"),
    "run_before_session": (f"{RUN}\n{SESSION}\n".encode(), r"timeline.jsonl:1: a 'run' record before any 'session'"),
    "torn_line_inside": (f"{SESSION}\n{RUN[:30]}\n{RUN}\n".encode(), r"timeline.jsonl:2: is not valid JSON"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_timeline_is_one_line(name, tmp_path, monkeypatch, capsys):
    content, message = CASES[name]
    compare_dir = timeline(tmp_path, content)
    monkeypatch.setattr(sys, "argv", ["compare_profile.py", str(compare_dir)])
    with pytest.raises(SystemExit) as exited:
        profile_module().main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("compare_profile: error: "), err
    assert __import__("re").search(message, err[0]), err


@pytest.mark.parametrize("where", ["no_timeline", "bad_results"])
def test_missing_or_unreadable_files_are_one_line(where, tmp_path, monkeypatch, capsys):
    if where == "bad_results":
        timeline(tmp_path, f"{SESSION}\n{RUN}\n".encode())
        (tmp_path / "finetune").mkdir()
        (tmp_path / "finetune" / "results.json").write_bytes(b"\x00not json")
    monkeypatch.setattr(sys, "argv", ["compare_profile.py", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        profile_module().main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert ("timeline.jsonl: cannot read it" if where == "no_timeline" else "results.json: not a readable results file") in err[0]


def test_a_torn_last_line_is_skipped_with_a_note(tmp_path, capsys):
    compare_dir = timeline(tmp_path, f"{SESSION}\n{RUN}\n{RUN[:25]}".encode())
    sessions, runs, jobs = profile_module().timeline_intervals(compare_dir)
    assert sessions == [(100.0, 150.0)] and runs == [("finetune", 101.0, 150.0)] and jobs == 2
    assert "skipped a torn last line" in capsys.readouterr().err
