"""The run's vocabulary is declared once (whisperjav_enhance/status.py): the tables in docs/cli.md
and README.md are its own output (scripts/status_tables.py), and every failure reason the code
produces is one of its names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from whisperjav_enhance.status import REASON_MEANINGS, RETIREMENT_MEANINGS, Reason, Retirement

REPO = Path(__file__).resolve().parents[1]


def _tables(*names: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "status_tables.py"), *names],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_docs_and_readme_tables_are_generated_from_status_py():
    assert _tables() in (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert _tables("reasons") in (REPO / "README.md").read_text(encoding="utf-8")


def test_every_name_has_one_meaning():
    reasons = {v for k, v in vars(Reason).items() if not k.startswith("_")}
    retirements = {v for k, v in vars(Retirement).items() if not k.startswith("_")}
    assert reasons == set(REASON_MEANINGS) and retirements == set(RETIREMENT_MEANINGS)


def test_no_failure_reason_is_a_bare_string_in_the_product():
    """SceneError/AudioError and the records are given Reason names, never literals."""
    literals = []
    for path in (REPO / "whisperjav_enhance").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", ""))\
                    in ("SceneError", "AudioError", "fail") and node.args:
                first = node.args[0] if not isinstance(node.func, ast.Attribute) or \
                    node.func.attr != "fail" else (node.args[1] if len(node.args) > 1 else None)
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    literals.append(f"{path.relative_to(REPO)}:{node.lineno} {first.value!r}")
    assert not literals, literals
