"""The code stays clean under the project's ruff configuration (pyproject.toml)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is in the dev extra; not installed here")
    res = subprocess.run([ruff, "check", "npmaskrcnn", "tests", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]


MAX_LINES = 400  # one concept per file, readable in one sitting (issue 15)


def test_no_package_file_is_longer_than_a_reader_can_hold():
    long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "npmaskrcnn").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_importing_any_module_runs_nothing(tmp_path, monkeypatch):
    """Every module of the package imports without side effects: no run starts, nothing is
    written (a ``__main__.py`` acts only under ``python -m``). A documentation tool or a
    scan of the package imports them all."""
    import importlib

    monkeypatch.chdir(tmp_path)  # anything written by accident lands here, and is seen
    names = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                   for p in (ROOT / "npmaskrcnn").rglob("*.py"))
    for name in names:
        importlib.import_module(name.removesuffix(".__init__"))
    assert len(names) > 50 and list(tmp_path.iterdir()) == []
