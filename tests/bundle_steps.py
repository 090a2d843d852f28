"""Run several ``python -m monai.bundle ...`` commands one after the other in ONE process (each pays the 8 s import of
torch + MONAI once instead of once per command); used by the tests that chain train -> resume -> inference.

    python tests/bundle_steps.py STEPS.json

STEPS.json: ``[{"cwd": "<folder>", "args": ["run", "training", "--config_file", ...]}, ...]``. Each step runs exactly
as ``python -m monai.bundle <args>`` run from ``cwd`` would (MONAI's own ``__main__`` through ``runpy``). A step
``{"snapshot": ["<folder>", "<copy>"]}`` copies a folder instead (what a step wrote, kept before the next changes
it). After each step a line ``STEP <i> DONE`` goes to stdout and stderr, so a test can split the output by step. The
first failing step ends the process with its exit code.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import sys

MARK = "STEP {} DONE"


def main(path: str) -> int:
    with open(path) as f:
        steps = json.load(f)
    for i, step in enumerate(steps):
        if "snapshot" in step:
            shutil.copytree(*step["snapshot"])
            for stream in (sys.stdout, sys.stderr):
                print(MARK.format(i), file=stream, flush=True)
            continue
        os.chdir(step["cwd"])
        sys.argv = ["monai.bundle", *step["args"]]
        try:
            runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
        except SystemExit as e:  # fire exits on argument errors; MONAI itself returns
            if e.code not in (None, 0):
                return int(e.code) if isinstance(e.code, int) else 1
        for stream in (sys.stdout, sys.stderr):
            print(MARK.format(i), file=stream, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
