"""README's Python snippets, run exactly as printed, each pasted into a plain script without
``if __name__ == "__main__":`` (workers are spawned, and must never re-run the caller's top
level), in a folder holding the example scenes, with the stand-in WhisperJAV on the path (the
drop-in snippets import WhisperJAV's own names)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUB = Path(__file__).resolve().parent / "whisperjav_stub"
SNIPPET_TIMEOUT_S = 300


def python_snippets() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_readme_has_python_snippets():
    assert len(python_snippets()) >= 2


@pytest.mark.timeout(SNIPPET_TIMEOUT_S + 60)
@pytest.mark.parametrize("number", range(len(python_snippets())))
def test_snippet_runs_as_printed_in_a_script_without_a_main_guard(number, tmp_path):
    snippet = python_snippets()[number]
    assert "__main__" not in snippet  # as a user pastes it: no guard
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    script = tmp_path / "snippet.py"
    # One line of our own after the snippet: a top level that ran twice would print it twice.
    script.write_text(snippet + '\nprint("END OF SCRIPT")\n', encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(STUB)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=SNIPPET_TIMEOUT_S)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert done.stdout.count("END OF SCRIPT") == 1, out
    assert "Traceback" not in out, out
