"""The package's layout keeps its promises: one home per name, a module map that tells the truth, small modules."""

import ast
import importlib
import re
from pathlib import Path

import pytest

import course_utils

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "course_utils"
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                 if p.name != "__init__.py")
MAP_ROW = re.compile(r"^\|\s*`(?P<module>[a-z_.]+)`\s*\|(?P<holds>[^|]+)\|\s*(?P<chapters>[^|]*?)\s*\|$", re.M)


def chapters_using(module: str) -> set[str]:
    """Chapter numbers (as written in the map: 0, 1, ...) whose text twin imports or names ``module``."""
    parent, _, leaf = module.rpartition(".")
    patterns = [rf"from {re.escape(module)} import", rf"\b{re.escape(module)}\.",
                rf"from {re.escape(parent)} import [^\n]*\b{leaf}\b"]
    if module == "course_utils.runtime":  # the package's entry points come from runtime
        patterns.append(r"\bcourse_utils\.(setup|by_profile|get_profile)\(")
    return {str(int(ch.name[:2])) for ch in (ROOT / "chapters").glob("[0-9][0-9]_*.py")
            if any(re.search(p, ch.read_text()) for p in patterns)}


def parse_map(text: str) -> dict[str, set[str]]:
    rows = {}
    for m in MAP_ROW.finditer(text):
        chapters = m["chapters"].strip()
        rows["course_utils." + m["module"]] = set() if chapters in ("", "-", "—") else {
            c.strip() for c in chapters.split(",")}
    return rows


@pytest.mark.parametrize("where", ["package docstring", "book/setup.md"])
def test_module_map_lists_every_module_with_the_chapters_that_use_it(where):
    text = course_utils.__doc__ if where == "package docstring" else (ROOT / "book" / "setup.md").read_text()
    rows = parse_map(text)
    assert sorted(rows) == MODULES, f"the module map in the {where} must list every module once"
    wrong = {m: (sorted(rows[m]), sorted(chapters_using(m))) for m in MODULES if rows[m] != chapters_using(m)}
    assert not wrong, f"chapters column of the {where} disagrees with the chapters' imports: {wrong}"


def test_every_public_name_has_one_home():
    """A name in a module's ``__all__`` is defined there, and no other module lists it in its ``__all__``."""
    homes: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(name)
        assert hasattr(module, "__all__"), f"{name} has no __all__"
        for public in module.__all__:
            obj = getattr(module, public)
            defined_in = getattr(obj, "__module__", name)
            if (callable(obj) or isinstance(obj, type)) and str(defined_in).startswith("course_utils"):
                assert defined_in == name, f"{name} re-exports {public} from {defined_in}"
            assert public not in homes, f"{public} is public in both {homes[public]} and {name}"
            homes[public] = name


def test_subpackages_re_export_nothing_and_no_module_has_getattr():
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if init.parent == PACKAGE:  # the package's three entry points: setup, by_profile, get_profile
            assert [a.name for n in imports for a in n.names] == ["by_profile", "get_profile", "setup"]
        else:
            assert not imports, f"{init.relative_to(ROOT)} re-exports names: import them from their module"
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), path


def test_modules_stay_readable_in_one_sitting():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long, f"modules over 350 lines (split them by concept): {long}"


def test_chapters_keep_plumbing_in_the_package():
    """At most 8 top-level def/class per chapter and 35 in all, exercise solutions (cells tagged "solution") excepted."""
    counts = {}
    for ch in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py")):
        lines = ch.read_text().splitlines()
        defs = [i for i, line in enumerate(lines) if re.match(r"(def|class) ", line)]
        cell_marker = lambda i: next(lines[j] for j in range(i, -1, -1) if lines[j].startswith("# %%"))  # noqa: E731
        counts[ch.name] = sum('"solution"' not in cell_marker(i) for i in defs)
        assert not [line for line in lines if re.match(r"[A-Za-z_]\w* = lambda", line)], f"{ch.name}: top-level lambda"
    assert max(counts.values()) <= 8, counts
    assert sum(counts.values()) <= 35, counts


def test_every_module_has_its_mirrored_test_file():
    """``course_utils/X.py`` is tested in ``tests/test_X.py``, ``course_utils/sub/X.py`` in ``tests/sub/test_X.py``."""
    missing = []
    for module in MODULES:
        *folders, leaf = module.split(".")[1:]
        test_file = ROOT.joinpath("tests", *folders, f"test_{leaf}.py")
        if not test_file.is_file():
            missing.append(f"{module} -> {test_file.relative_to(ROOT)}")
    assert len(MODULES) > 20 and not missing, f"modules without their mirrored test file: {missing}"
