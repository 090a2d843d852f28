"""multi_gpu_train.yaml of every bundle (discovered), run as documented with torchrun: 2 processes on CPU (gloo), one
tiny epoch. Both ranks must end with identical weights, each having trained on its half of the data (DDP +
DistributedSampler), and exactly one process must write the checkpoint."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
from conftest import BUNDLES, ROOT

IDS = [b.name for b in BUNDLES]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_torchrun_two_processes_gloo(bundle, tmp_path, data_cache):
    configs = bundle / "configs"
    assert (configs / "multi_gpu_train.yaml").is_file()
    files = [
        configs / "train.yaml",
        configs / "multi_gpu_train.yaml",
        configs / "smoke.yaml",
        ROOT / "tests" / "ddp_probe.yaml",
    ]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "training", "--config_file", "[" + ",".join(f"'{f}'" for f in files) + "]"]
    cmd += [
        "--max_epochs=1",
        "--batch_size=1",
        f"--ckpt_dir={tmp_path / 'models'}",
        f"--output_dir={tmp_path / 'eval'}",
    ]
    cmd += [f"--data_cache_dir={data_cache / bundle.name}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-8000:]

    probes = [torch.load(tmp_path / "eval" / f"rank{r}_probe.pt", map_location="cpu") for r in (0, 1)]
    w0, w1 = probes[0]["weights"], probes[1]["weights"]
    assert w0.keys() == w1.keys()
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=f"ranks disagree on {k}")
    n_train = probes[0]["n_train"]
    for p in probes:  # each rank iterated over its shard only (batch size 1)
        assert p["iterations"] == math.ceil(n_train / 2), (p["iterations"], n_train)

    ckpt = tmp_path / "models" / "checkpoint_last.pt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    for k in w0:  # the one checkpoint holds the trained weights, without DDP's "module." prefix
        torch.testing.assert_close(saved[k], w0[k])
    writes = re.findall(r"rank (\d+) wrote (\S+checkpoint_last\.pt)", log)
    writes = [r for r, path in writes if path == str(ckpt)]
    assert writes and set(writes) == {"0"}, writes  # one writer
    assert len(writes) == 2  # after the epoch and at completion, by rank 0 only
    assert not list((tmp_path / "models").rglob(".*tmp*")), "a temporary checkpoint file was left behind"
    assert (tmp_path / "models" / "model.pt").is_file() and list((tmp_path / "eval").glob("*_summary.md"))
