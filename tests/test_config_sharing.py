"""The bundles' configs hold what is each method's own; the shared wiring lives once, in ``common/configs``.

Checked here: no two bundles repeat a run of 8 or more identical config lines (``metadata.json`` excluded: MONAI
requires a self-contained manifest in every bundle), every config parses from the repository root, from its bundle
folder and, with the shared pieces written out (:func:`common.configs.expand_shared_macros`, what ``restorezoo export``
ships), from anywhere, to the same resolved content as MONAI's own macro resolution.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import yaml
from conftest import BUNDLES, ROOT
from monai.bundle import ConfigParser

from common.configs import MACRO_PREFIX, expand_shared_macros, load_config_files

MAX_SHARED_RUN = 7  # lines; 8 identical lines in two bundles is a piece to move into common/configs


def _lines(path: Path) -> list[str]:
    """Non-blank, non-comment lines, right-stripped (indentation kept: it is part of the YAML structure)."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line.rstrip())
    return out


def _config_files(bundle: Path) -> list[Path]:
    return [
        f
        for f in sorted((bundle / "configs").iterdir())
        if f.suffix in (".yaml", ".json", ".conf") and f.name != "metadata.json" and not f.is_symlink()
    ]


def longest_common_run(a: list[str], b: list[str]) -> tuple[int, int]:
    """Length of the longest run of consecutive equal lines in ``a`` and ``b``, and where it starts in ``a``."""
    best, where, prev = 0, 0, [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best, where = cur[j], i - cur[j]
        prev = cur
    return best, where


def test_longest_common_run_finds_a_planted_block():
    block = [f"  line{i}: {i}" for i in range(8)]
    assert longest_common_run(["a", *block, "b"], ["c", "d", *block]) == (8, 1)
    assert longest_common_run(["a", "b"], ["c"]) == (0, 0)


def test_no_bundle_repeats_another_bundles_config_lines():
    files = {(b.name, f.name): _lines(f) for b in BUNDLES for f in _config_files(b)}
    too_long = []
    for (ka, a), (kb, b) in itertools.combinations(files.items(), 2):
        if ka[0] == kb[0]:
            continue
        n, start = longest_common_run(a, b)
        if n > MAX_SHARED_RUN:
            too_long.append(f"{'/'.join(ka)} and {'/'.join(kb)}: {n} lines from {a[start]!r}")
    assert not too_long, "move these into common/configs:\n" + "\n".join(too_long)


def test_logging_conf_is_the_shared_file():
    for bundle in BUNDLES:
        link = bundle / "configs" / "logging.conf"
        assert link.is_symlink() and link.resolve() == (ROOT / "common" / "configs" / "logging.conf").resolve()
        assert (bundle / "common").resolve() == (ROOT / "common").resolve()  # the macro paths from the bundle folder


def _normalised(config):
    """``config`` with MONAI's two spellings of the id separator (``#``, ``::``) made one: its macro resolution
    rewrites the separator in the bundle's own strings but not in the pieces it inserts."""
    if isinstance(config, dict):
        return {k.replace("#", "::"): _normalised(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_normalised(v) for v in config]
    return config.replace("#", "::") if isinstance(config, str) else config


def _macro_files() -> list[Path]:
    return [f for b in BUNDLES for f in _config_files(b) if f.suffix == ".yaml" and MACRO_PREFIX in f.read_text()]


@pytest.mark.parametrize("config", _macro_files(), ids=lambda f: f"{f.parent.parent.name}/{f.name}")
def test_written_out_config_resolves_as_monai_resolves_the_macros(config: Path, tmp_path: Path, monkeypatch):
    """MONAI's resolution of the ``%common/configs/...`` macros, from the repository root and from the bundle folder,
    equals the config with the pieces written out, read from a folder where no ``common/configs`` exists."""
    resolved = []
    for cwd in (ROOT, config.parent.parent):
        monkeypatch.chdir(cwd)
        parser = ConfigParser()
        parser.read_config(str(config))
        parser.resolve_macro_and_relative_ids()
        resolved.append(_normalised(parser.get()))
    assert resolved[0] == resolved[1]

    monkeypatch.chdir(tmp_path)
    written = expand_shared_macros(config.read_text())
    assert MACRO_PREFIX not in written
    for content in (yaml.safe_load(written), load_config_files(config)):
        parser = ConfigParser()
        parser.read_config(content)
        parser.resolve_macro_and_relative_ids()
        assert _normalised(parser.get()) == resolved[0]
    assert not os.path.exists(tmp_path / "common")


def test_expand_names_an_unknown_piece():
    with pytest.raises(FileNotFoundError, match="no such shared config file"):
        expand_shared_macros('trainer: "%common/configs/nope.yaml#trainer"')
    with pytest.raises(KeyError):
        expand_shared_macros('trainer: "%common/configs/train.yaml#no_such_id"')
