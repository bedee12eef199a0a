"""Every ``xp.<name>`` the package calls must exist in CuPy too.

The GPU path cannot be exercised on a machine without a GPU, but CuPy imports without
one, so its namespace can be checked: this walks the package's source, collects every
attribute read from a variable named ``xp`` (``xp.maximum``, ``xp.linalg.norm``, ...)
and asserts CuPy has it. A NumPy-only function would otherwise fail only on a GPU. The
same walk checks that every such call's arguments bind to the CuPy function's signature
(a keyword NumPy takes and CuPy does not, ``xp.argsort(a, order=...)``, fails the same way).
"""

import ast
import inspect
from pathlib import Path

import pytest

import npmaskrcnn

PACKAGE = Path(npmaskrcnn.__file__).parent


def xp_chain(node) -> tuple[str, ...] | None:
    """The attribute chain of ``xp.a.b`` as ("a", "b"); None unless the node is an
    attribute chain rooted at the name ``xp`` (``xp.zeros(n).astype`` is rooted at a call)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if parts and isinstance(node, ast.Name) and node.id == "xp":
        return tuple(reversed(parts))
    return None


def xp_attribute_chains(source: str) -> set[tuple[str, ...]]:
    """Attribute chains read off the name ``xp``: ``xp.a.b`` -> ("a", "b")."""
    return {chain for node in ast.walk(ast.parse(source)) if (chain := xp_chain(node))}


def xp_calls(source: str):
    """``(chain, positional count, keyword names, line)`` of every ``xp.<chain>(...)`` call
    whose arguments are all written out (no ``*args`` / ``**kwargs``)."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or (chain := xp_chain(node.func)) is None:
            continue
        if any(isinstance(a, ast.Starred) for a in node.args):
            continue
        if any(k.arg is None for k in node.keywords):
            continue
        calls.append((chain, len(node.args), [k.arg for k in node.keywords], node.lineno))
    return calls


def signature_mismatch(cupy, chain, n_args: int, keywords) -> str | None:
    """Why ``cupy.<chain>(n_args positional, keywords)`` cannot bind, or None if it can (or
    CuPy does not say: a compiled function without a signature)."""
    obj = cupy
    for part in chain:
        obj = getattr(obj, part, None)
        if obj is None:
            return None  # a missing name: test_every_xp_call_exists_in_cupy's to report
    if isinstance(obj, cupy.ufunc):  # compiled: its call takes the operands and these
        extra = sorted(set(keywords) - {"out", "dtype", "casting"})
        if extra or n_args > obj.nin + obj.nout:
            return f"ufunc {obj.__name__} takes {obj.nin} operands, out, dtype, casting"
        return None
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*[None] * n_args, **dict.fromkeys(keywords))
    except TypeError as err:
        return f"{err} (cupy.{'.'.join(chain)}{sig})"
    return None


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


def test_every_xp_call_binds_to_cupys_signature():
    cupy = pytest.importorskip("cupy", reason="cupy-cuda12x is in the dev extra")
    bad, checked = [], 0
    for path in PACKAGE.rglob("*.py"):
        for chain, n_args, keywords, line in xp_calls(path.read_text()):
            checked += 1
            why = signature_mismatch(cupy, chain, n_args, keywords)
            if why:
                bad.append(f"{path.relative_to(PACKAGE)}:{line}: xp.{'.'.join(chain)}: {why}")
    assert checked > 300, f"only {checked} xp calls found: the walker is broken"
    assert not bad, "calls CuPy would refuse:\n" + "\n".join(bad)


def test_signature_check_catches_what_cupy_refuses():
    """The check itself: keywords and argument counts CuPy does not take are caught."""
    cupy = pytest.importorskip("cupy", reason="cupy-cuda12x is in the dev extra")
    source = ("xp.argsort(a, order='x')\nxp.maximum(a, b, where=m)\nxp.concatenate(a, 0, o, 1)\n"
              "xp.argsort(a, axis=1, kind='stable')\nxp.maximum(a, 0, out=a)\n"
              "xp.zeros(3).astype(t, copy=False)\n")  # the last call is astype's, not xp's
    calls = xp_calls(source)
    assert [c[0] for c in calls] == [("argsort",), ("maximum",), ("concatenate",),
                                     ("argsort",), ("maximum",), ("zeros",)]
    assert calls[-1][1:3] == (1, [])
    verdicts = [signature_mismatch(cupy, *c[:3]) for c in calls]
    print(verdicts)
    assert all(verdicts[:3]) and not any(verdicts[3:])
