"""Every ``xp.<name>`` the package calls must exist in CuPy too.

The GPU path cannot be exercised on a machine without a GPU, but CuPy imports without
one, so its namespace can be checked: this walks the package's source, collects every
attribute read from a variable named ``xp`` (``xp.maximum``, ``xp.linalg.norm``, ...)
and asserts CuPy has it. A NumPy-only function would otherwise fail only on a GPU.
"""

import ast
from pathlib import Path

import pytest

import npmaskrcnn

PACKAGE = Path(npmaskrcnn.__file__).parent


def xp_attribute_chains(source: str) -> set[tuple[str, ...]]:
    """Attribute chains read off the name ``xp``: ``xp.a.b`` -> ("a", "b")."""
    chains = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        parts = []
        cur = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and cur.id == "xp":
            chains.add(tuple(reversed(parts)))
    return chains


def test_walker_finds_nested_chains():
    chains = xp_attribute_chains("y = xp.linalg.norm(xp.maximum(a, 0))\nz = xp.float32")
    assert ("linalg", "norm") in chains
    assert ("maximum",) in chains and ("float32",) in chains


def test_every_xp_call_exists_in_cupy():
    cupy = pytest.importorskip("cupy", reason="cupy-cuda12x is in the dev extra")
    uses: dict[tuple[str, ...], set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for chain in xp_attribute_chains(path.read_text()):
            uses.setdefault(chain, set()).add(str(path.relative_to(PACKAGE)))
    assert uses, "no xp.<name> use found: the walker is broken"
    missing = []
    for chain, files in sorted(uses.items()):
        obj = cupy
        for i, part in enumerate(chain):
            if not hasattr(obj, part):


                missing.append(f"cupy.{'.'.join(chain[: i + 1])} (used in {sorted(files)})")
                break
            obj = getattr(obj, part)
    assert not missing, "NumPy-only functions on the xp path:\n" + "\n".join(missing)


def test_only_backend_imports_cupy():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "backend.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in ("cupy", "cupyx") for n in names):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"only backend.py may import CuPy: {offenders}"


def test_the_stand_in_offers_only_what_cupy_has():
    """cpupy serves NumPy functions by name; each must exist in CuPy, or code passing on
    the stand-in would fail on a GPU."""
    cupy = pytest.importorskip("cupy", reason="cupy-cuda12x is in the dev extra")
    from npmaskrcnn import cpupy

    names = cpupy.FUNCTIONS | cpupy.SYNCING | cpupy.catalog._PASSTHROUGH | cpupy.catalog._SPECIAL
    missing = sorted(n for n in names if not hasattr(cupy, n))
    assert not missing, f"cpupy offers functions CuPy lacks: {missing}"
    methods = sorted(m for m in cpupy.catalog._METHODS if not hasattr(cupy.ndarray, m))
    assert not methods, f"cpupy.ndarray offers methods cupy.ndarray lacks: {methods}"
