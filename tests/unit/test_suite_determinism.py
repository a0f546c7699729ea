"""The suite's own data is the same in every process: no salted ``hash()`` seeds test data.

Python salts ``hash()`` of strings and bytes per process (``PYTHONHASHSEED``), so a photo seeded
with ``hash((label, i))`` differs from run to run. That was the flake of
``tests/data/test_watch_and_add.py``: about one run in fifty drew a source photo with the same bytes
as one a test adds, and ``data add`` rightly refused it as already in the source. This check reads
every test module and fails on a call of the builtin ``hash`` (use fixed numbers, or
``zlib.crc32``/``hashlib`` when a stable number per key is wanted).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _salted_hash_calls(source: str) -> list[int]:
    """Line numbers of calls of the builtin ``hash`` in ``source`` (not ``x.hash(...)``)."""
    tree = ast.parse(source)
    shadowed = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "hash"
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "hash"
        and not shadowed
    ]


def test_the_check_finds_a_salted_seed_and_leaves_method_calls_alone() -> None:
    assert _salted_hash_calls("seed = hash(('a', 1)) % 1000\n") == [1]
    assert _salted_hash_calls("h = image.hash(8)\nd = hashlib.sha256(b'x')\n") == []


def test_no_test_module_seeds_its_data_with_the_salted_builtin_hash() -> None:
    found = {
        str(path.relative_to(TESTS)): lines
        for path in sorted(TESTS.rglob("*.py"))
        if (lines := _salted_hash_calls(path.read_text()))
    }
    assert found == {}, f"builtin hash() differs per process (PYTHONHASHSEED): {found}"
