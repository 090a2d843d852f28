"""The boundary between the runtime library (``common``: what the bundles' configs import when they train and infer)
and the tooling (``restorezoo``: command line, benchmark, speed, baselines, export, bundle validation)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_runtime_library_never_imports_the_tooling():
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] == "restorezoo")
        for p in sorted((ROOT / "common").rglob("*.py"))
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"common/ must not import the tooling: {offenders}"


def test_bundle_configs_name_only_the_runtime_library():
    """A release vendors ``common`` alone: a config naming ``restorezoo.*`` would not run there."""
    for config in sorted((ROOT / "bundles").glob("*/configs/*.yaml")) + sorted((ROOT / "common" / "configs").glob("*")):
        assert "restorezoo." not in config.read_text(), config


def test_a_module_that_imports_the_tooling_is_found(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom restorezoo.benchmark import render\nimport restorezoo.cli as c\n")
    assert {"restorezoo.benchmark", "restorezoo.cli"} <= _imported_modules(module)
