"""Run ``python -m monai.bundle ...`` so that NOTHING can be imported from this repository's checkout or its
installed (editable) package; used by tests/test_export.py to prove an exported bundle is self-contained.

    python tests/isolated_run.py REPORT.json -- run --config_file configs/inference.yaml ...

Before MONAI starts: the editable-install finders are removed, every ``sys.path`` entry inside the repository is
dropped, and a meta-path guard raises ``ImportError`` for any module whose file lies in the repository. Afterwards
REPORT.json holds where the vendored library (``restorezoo_common_<hash>``) came from, whether a plain ``common``
was imported, and, with their distributions, the third-party top-level modules that
the bundle's own loaded modules (vendored library, scripts) import anywhere in their source.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.metadata
import json
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _inside_repo(path: str | None) -> bool:
    if not path:
        return False
    try:
        return Path(path).resolve().is_relative_to(REPO)
    except (OSError, ValueError):
        return False


class RepoImportGuard(importlib.abc.MetaPathFinder):
    """Refuse any module that would be loaded from a file in the repository checkout."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if _inside_repo(spec.origin):
                    raise ImportError(f"isolated run: refusing to import {fullname} from the checkout ({spec.origin})")
                return None  # let the normal machinery load it
        return None


def _imports_of_loaded_bundle_modules(bundle: Path) -> set[str]:
    """Top-level names imported anywhere (module level or inside functions) in the bundle's modules that were loaded:
    what this inference needs beyond the Python standard library."""
    names: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file or not file.endswith(".py") or not Path(file).is_absolute():
            continue
        if not Path(file).resolve().is_relative_to(bundle):
            continue
        for node in ast.walk(ast.parse(Path(file).read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def main() -> int:
    report, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: isolated_run.py REPORT.json -- <monai.bundle arguments>"
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    sys.path[:] = [p for p in sys.path if p and not _inside_repo(p)]
    sys.path.insert(0, str(Path.cwd()))  # `python -m` semantics: the current folder (the exported bundle) first
    if _inside_repo(str(Path.cwd())):
        raise SystemExit("isolated run: the working directory may not be inside the repository")
    sys.meta_path.insert(0, RepoImportGuard())
    sys.argv = ["monai.bundle", *args]
    code = 0
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    dists = importlib.metadata.packages_distributions()
    local = {p.name.removesuffix(".py") for p in Path.cwd().iterdir()}  # the bundle's own packages / modules
    names = _imports_of_loaded_bundle_modules(Path.cwd().resolve())
    direct = {name: dists.get(name, []) for name in sorted(names - local - set(sys.stdlib_module_names))}
    vendored = {
        name: getattr(m, "__file__", None)
        for name, m in sys.modules.items()
        if "." not in name and name.startswith("restorezoo_common_")
    }
    rep = {"vendored": vendored, "plain_common": "common" in sys.modules, "direct_imports": direct}
    Path(report).write_text(json.dumps(rep))
    return code


if __name__ == "__main__":
    sys.exit(main())
