"""The lesson notebooks in ``lessons/``: their committed form, not their execution.

Every notebook is committed without outputs, the lessons are numbered 00, 01, ... without
gaps, and each one has a markdown title, reads the fast-mode switch in its first code cell,
draws at least one plot and holds at least one ``assert`` (its CHECK cell). Running the
notebooks is a separate step: ``NPMASKRCNN_FAST=1 python -m pytest --nbmake lessons/``.

Each rule is a function returning the problems it finds, tested first on small synthetic
notebooks that break it (so a rule that can never fire is caught) and then on every lesson.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("*.ipynb"))
NAME = re.compile(r"^(\d{2})_[a-z0-9_]+\.ipynb$")
FAST_SWITCH = 'FAST = os.environ.get("NPMASKRCNN_FAST", "0") == "1"'
# a matplotlib call that draws (pyplot, an Axes method, or a visualize.py helper)
PLOT_CALL = re.compile(
    r"\bplt\.\w+\(|\.(plot|imshow|bar|barh|hist|scatter|semilogx|semilogy|loglog|step"
    r"|add_patch|contour|contourf)\(|\b(show_\w+|draw_instances|plot_\w+)\("
)
ASSERT = re.compile(r"^\s*assert\b", re.MULTILINE)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _code(nb: dict) -> list[str]:
    return [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]


def output_problems(nb: dict) -> list[str]:
    """Code cells that carry outputs or an execution count (they must be stripped)."""
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {i} has {len(cell['outputs'])} output(s)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i} has execution_count {cell['execution_count']}")
    return problems


def structure_problems(nb: dict) -> list[str]:
    """A missing title, fast-mode switch, plot or assert."""
    problems = []
    cells = nb["cells"]
    if not cells or cells[0]["cell_type"] != "markdown" or not _source(cells[0]).startswith("# "):
        problems.append("the first cell is not a markdown title ('# ...')")
    code = _code(nb)
    if not code or FAST_SWITCH not in code[0]:
        problems.append(f"the first code cell does not read {FAST_SWITCH!r}")
    if not any(PLOT_CALL.search(src) for src in code):
        problems.append("no plotting call in any code cell")
    if not any(ASSERT.search(src) for src in code):
        problems.append("no assert in any code cell (a CHECK cell must be able to fail)")
    return problems


def numbering_problems(names: list[str]) -> list[str]:
    """Names not of the form NN_words.ipynb, or numbers not 0, 1, ... without gaps."""
    problems = [f"{n}: not named NN_lower_case.ipynb" for n in names if not NAME.match(n)]
    numbers = sorted(int(NAME.match(n).group(1)) for n in names if NAME.match(n))
    if numbers != list(range(len(numbers))):
        problems.append(f"lesson numbers {numbers} are not 0, 1, ... without gaps or repeats")
    return problems


def _notebook(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _md(src: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": src}


def _cell(src: str, outputs=(), count=None) -> dict:
    return {"cell_type": "code", "metadata": {}, "source": src, "outputs": list(outputs),
            "execution_count": count}


GOOD = _notebook([
    _md("# Lesson 99 — a title"),
    _cell(f"import os\n{FAST_SWITCH}\n"),
    _cell("fig, ax = plt.subplots()\nax.plot([0, 1])\n"),
    _cell("x = 1\nassert x == 1\n"),
])


def test_rules_accept_a_good_notebook():
    assert output_problems(GOOD) == []
    assert structure_problems(GOOD) == []
    assert numbering_problems(["00_a.ipynb", "01_b_c.ipynb", "02_d.ipynb"]) == []


def test_rules_catch_each_violation():
    with_output = _notebook([GOOD["cells"][0], _cell("1", outputs=[{"output_type": "stream"}])])
    assert len(output_problems(with_output)) == 1
    with_count = _notebook([GOOD["cells"][0], _cell("1", count=3)])
    assert output_problems(with_count) == ["cell 1 has execution_count 3"]

    no_title = _notebook([_md("Lesson without a heading")] + GOOD["cells"][1:])
    no_switch = _notebook([GOOD["cells"][0], _cell("import os\n")] + GOOD["cells"][2:])
    no_plot = _notebook(GOOD["cells"][:2] + GOOD["cells"][3:])
    no_assert = _notebook(GOOD["cells"][:3] + [_cell("# assert is only mentioned here\n")])
    for bad, word in [(no_title, "title"), (no_switch, "NPMASKRCNN_FAST"),
                      (no_plot, "plotting"), (no_assert, "assert")]:
        problems = structure_problems(bad)
        assert len(problems) == 1 and word in problems[0], problems

    assert numbering_problems(["00_a.ipynb", "02_c.ipynb"])           # a gap
    assert numbering_problems(["01_a.ipynb"])                         # does not start at 00
    assert numbering_problems(["00_a.ipynb", "00_b.ipynb"])           # a repeat
    assert numbering_problems(["00_a.ipynb", "1_b.ipynb"])            # a bad name


def test_lessons_exist_and_are_numbered_contiguously():
    assert NOTEBOOKS, f"no notebooks in {LESSONS}"
    assert numbering_problems([p.name for p in NOTEBOOKS]) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_committed_without_outputs(path):
    problems = output_problems(json.loads(path.read_text(encoding="utf-8")))
    assert problems == [], (f"{path.name}: {problems}; strip them with "
                            "`jupyter nbconvert --clear-output --inplace lessons/*.ipynb`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lesson_structure(path):
    assert structure_problems(json.loads(path.read_text(encoding="utf-8"))) == []


def test_readme_lists_every_lesson():
    readme = (LESSONS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert missing == [], f"lessons/README.md does not list {missing}"
