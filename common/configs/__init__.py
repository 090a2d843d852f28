"""The configuration shared by every bundle: ``imports.yaml`` (the modules configs may use), ``train.yaml`` (training,
validation, checkpoint / resume, logging and DDP wiring), ``inference.yaml`` (the inference / evaluation workflow)
and ``logging.conf``.

A bundle config brings a piece in with a MONAI macro whose path is relative to the folder the command runs from,
``"%common/configs/<file>#<id>"``; every bundle folder links ``common`` to this library, so the commands work from the
repository root and from the bundle folder. :func:`expand_shared_macros` writes the pieces out in full, for releases
(``restorezoo export``) and for configs that run elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CONFIG_DIR", "MACRO_PREFIX", "expand_shared_macros", "load_config_files", "shared_piece"]

CONFIG_DIR = Path(__file__).resolve().parent
MACRO_PREFIX = "%common/configs/"

# a whole line `<indent>[- ][key: ]"%common/configs/<file>#<id>"[  # comment]`
_LINE = re.compile(
    r'^(?P<indent> *)(?P<dash>- )?(?:(?P<key>[\w#]+): )?"'
    + re.escape(MACRO_PREFIX)
    + r'(?P<ref>[^"]+)"(?P<comment>\s+#.*)?$'
)


@cache
def _load(name: str) -> dict:
    path = CONFIG_DIR / name
    if path.parent != CONFIG_DIR or not path.is_file():
        raise FileNotFoundError(f"{MACRO_PREFIX}{name}: no such shared config file")
    with open(path) as f:
        return yaml.safe_load(f)


def shared_piece(ref: str) -> Any:
    """The content of ``"<file>#<id>"`` (an id of one of the shared files, ``#`` separated for nested keys)."""
    from monai.bundle import ConfigParser

    name, _, ids = ref.partition("#")
    return ConfigParser(_load(name))[ids]  # MONAI's own id lookup ("" is the whole file)


def _dump(value: Any, indent: int) -> list[str]:
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=10_000, allow_unicode=True)
    return [" " * indent + line for line in text.rstrip("\n").split("\n")]


def expand_shared_macros(text: str) -> str:
    """``text`` (a bundle's YAML config) with every whole-line ``"%common/configs/..."`` macro replaced by the YAML of
    the piece it names, so the config runs without the shared files; other lines (and comments) unchanged."""
    out: list[str] = []
    for line in text.split("\n"):
        m = _LINE.match(line)
        if not m:
            out.append(line)
            continue
        indent, value = len(m["indent"]), shared_piece(m["ref"])
        head = m["indent"] + (m["dash"] or "")
        comment = (m["comment"] or "").strip()
        if not isinstance(value, dict | list):  # a scalar: inline
            out.append(f"{head}{m['key'] + ': ' if m['key'] else ''}{yaml.safe_dump(value).splitlines()[0]}")
            continue
        child = indent + (2 if m["dash"] else 0) + (2 if m["key"] else 0)
        body = _dump(value, child)
        if m["key"]:
            out.append(f"{head}{m['key']}:{'  ' + comment if comment else ''}")
            out.extend(body)
        else:  # a list item holding the piece: `- ` then the piece, its first line on the dash line
            out.append(head + body[0][child:])
            out.extend(body[1:])
    return "\n".join(out)


def load_config_files(files: str | PathLike | Sequence[str | PathLike]) -> dict:
    """The merged content of bundle config files, later files overriding earlier ids (``a#b`` keys set nested ids,
    ``+key`` extends), as ``monai.bundle.ConfigParser.load_config_files`` merges them, with the shared pieces written
    out: the result parses from any working folder. Pass it to ``ConfigParser.read_config``."""
    import json

    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv

    parser = ConfigParser(config={})
    for f in [files] if isinstance(files, str | PathLike) else files:
        text = Path(f).read_text()
        content = json.loads(text) if str(f).endswith(".json") else yaml.safe_load(expand_shared_macros(text))
        for k, v in (content or {}).items():
            merge_kv(parser, k, v)
    return parser.get()
