"""Inference speed, memory and compute efficiency of a bundle, side by side with a reference network.

Each measurement runs in a fresh subprocess (``python -m restorezoo.speed --child ...``) so its peak RSS is its own:

- the bundle's own inferer from ``inference.yaml`` (its ROI, blending, ensembles, output scale, sampler) on a random
  volume (default 128 x 128 x 96; for super-resolution the thick input whose output is that size), one warm-up and
  ``repeats`` timed runs (the fastest is reported);
- FLOPs of one whole inference call counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
  products), reported per output voxel, and achieved GFLOP/s = FLOPs / time;
- the machine's fp32 matmul peak (GFLOP/s of a 2048 x 2048 matrix product, best of 5) with the same threads, so the
  achieved rate is also given as a fraction of that peak;
- the reference: MONAI ``UNet(3, 1, 1, (16, 32, 64, 128), (2, 2, 2))`` through a Gaussian sliding window (ROI 64,
  overlap 0.5) on a 128 x 128 x 96 volume, measured the same way in the same run.

``overrides`` change config ids for the measurement (e.g. fewer diffusion steps; ``per_volume_factor`` then scales
the time and FLOPs of one call to a whole volume, stated in the output). ``window`` (``{"roi": 48, "overlap": 0.5}``)
runs the bundle's network and the reference through the same plain Gaussian sliding window instead
(``restorezoo speed --roi/--overlap``: network against network, without the bundle's ensembles).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["matmul_peak_gflops", "measure", "speed_rows"]

SHAPE = (128, 128, 96)


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an ``n x n`` matrix product on this machine with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def measure(
    kind: str,
    bundle_dir: str,
    threads: int = 2,
    repeats: int = 2,
    input_shape: tuple[int, ...] = SHAPE,
    overrides: dict[str, Any] | None = None,
    per_volume_factor: float = 1.0,
    window: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One measurement in THIS process: ``kind`` is ``"bundle"`` or ``"reference"``; ``window``: see the module."""
    import torch
    from monai.bundle import ConfigParser
    from monai.networks.nets import UNet
    from torch.utils.flop_counter import FlopCounterMode

    from common.configs import load_config_files
    from common.inferers import PaddedSlidingWindowInferer
    from restorezoo.bundle_check import extra_forward_args

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    configs = Path(bundle_dir) / "configs"
    extra: dict[str, Any] = {}
    if kind == "bundle":
        parser = ConfigParser()
        parser.read_config(load_config_files(configs / "inference.yaml"))
        parser["bundle_root"] = str(bundle_dir)
        parser["device"] = "$torch.device('cpu')"
        for k, v in (overrides or {}).items():
            parser[k] = v
        net = parser.get_parsed_content("network_def", instantiate=True)
        x = torch.rand(1, 1, *input_shape)
        meta = json.loads((configs / "metadata.json").read_text())
        name = Path(bundle_dir).name
        if window:  # the plain window below calls the network with its conditioning arguments
            extra = extra_forward_args(meta)
        else:
            from common.inferers import ConditionedInferer

            inferer = parser.get_parsed_content("inferer", instantiate=True)
            if isinstance(inferer, ConditionedInferer):  # dose-conditioned: the vector rides in the image meta data
                from monai.data import MetaTensor

                doses = [v for k, v in extra_forward_args(meta).items() if v.dtype.is_floating_point]
                # a network without a dose input of its own (the DDPM: its estimator takes it) gets DRF 20
                cond = doses[0][0] if doses else torch.tensor([math.log(20.0) / 10])
                x = MetaTensor(x, meta={inferer.meta_key: cond})
    else:
        net = UNet(3, 1, 1, (16, 32, 64, 128), (2, 2, 2))
        x = torch.rand(1, 1, *SHAPE)
        name, per_volume_factor = "MONAI UNet (16,32,64,128) reference", 1.0
    if kind != "bundle" or window:
        win = window or {"roi": 64, "overlap": 0.5}
        inferer = PaddedSlidingWindowInferer(
            roi_size=int(win["roi"]), sw_batch_size=1, overlap=float(win["overlap"]), mode="gaussian"
        )
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        out = inferer(x, net, *extra.values())  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            inferer(x, net, *extra.values())
            times.append(time.perf_counter() - t0)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        counter = FlopCounterMode(display=False)
        with counter:
            inferer(x, net, *extra.values())
    out = out[0] if isinstance(out, list | tuple) else out
    seconds = min(times) * per_volume_factor
    flops = counter.get_total_flops() * per_volume_factor
    voxels = int(out[:, :1].numel())  # output voxels of the first channel (DDPM: the mean image)
    return {
        "model": name,
        "params": params,
        "input_shape": list(x.shape[2:]),
        "output_shape": list(out.shape[2:]),
        "seconds_per_volume": seconds,
        "voxels_per_s": voxels / seconds,
        "flops_per_voxel": flops / voxels,
        "gflops_per_s": flops / seconds / 1e9,
        "peak_rss_MB": rss,
        "per_volume_factor": per_volume_factor,
        "threads": threads,
    }


def _child(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "restorezoo.speed", "--child", json.dumps({**job, "kind": kind})],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"speed measurement of {job['bundle_dir']} ({kind}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed_rows(
    bundle_dir: str | Path,
    threads: int = 2,
    repeats: int = 2,
    input_shape: tuple[int, ...] = SHAPE,
    overrides: dict[str, Any] | None = None,
    per_volume_factor: float = 1.0,
    reference: dict[str, Any] | None = None,
    window: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """``[reference row, bundle row]``, each measured in its own subprocess (``reference``: a row measured earlier
    in the same run, reused), plus the matmul peak and the ratios: ``x_reference`` (voxels/s over the reference's)
    and ``peak_fraction`` (achieved GFLOP/s over the peak)."""
    job = {
        "bundle_dir": str(bundle_dir),
        "threads": threads,
        "repeats": repeats,
        "input_shape": list(input_shape),
        "overrides": overrides or {},
        "per_volume_factor": per_volume_factor,
        "window": window,
    }
    rows = [dict(reference) if reference else _child("reference", job), _child("bundle", job)]
    peak = rows[0].get("matmul_peak_gflops") or matmul_peak_gflops(threads)
    for r in rows:
        r["x_reference"] = r["voxels_per_s"] / rows[0]["voxels_per_s"]
        r["matmul_peak_gflops"] = peak
        r["peak_fraction"] = r["gflops_per_s"] / peak
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("bundle", nargs="?", help="bundle folder, e.g. bundles/pet_lowdose_film_unet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--input-shape", type=int, nargs=3, default=list(SHAPE))
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        job["input_shape"] = tuple(job["input_shape"])
        print(json.dumps(measure(**job)))
        return
    for r in speed_rows(args.bundle, args.threads, args.repeats, tuple(args.input_shape)):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
