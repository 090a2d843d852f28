"""How the DDPM output's PSNR depends on the number of averaged samples, next to the network's own one-step
estimate of the posterior mean (DDIM with one step: the ``x_0`` predicted from pure noise at t = T - 1).

    python bundles/pet_lowdose_ddpm3d/scripts/sample_count_study.py --datalist DATALIST.json \
        --checkpoint bundles/pet_lowdose_ddpm3d/models/model.pt [--split validation] [--drf 20] [--samples 4] \
        [--steps 10] [--temperature 1] [--device cuda]

Why it matters: for exact posterior samples ``y_i`` of the full dose ``x`` given the low dose, the mean of ``N``
samples has expected squared error ``MMSE (1 + 1 / N)``, where MMSE is the error of the posterior mean. The output
beats the input only if the posterior mean does by more than ``10 log10(1 + 1 / N)`` dB (3.0 dB for one sample, 1.8
for two, 1.0 for four). The script measures both sides for a trained network: PSNR (SUV, peak = reference max, as
evaluate.yaml) of the input, of the one-step estimate and of the mean of the first n samples (n = 1, 2, 4, ...), and
``spread`` = mean squared distance of the samples to their mean over the mean's squared error (1 for exact
posterior samples of a well-calibrated model). The network and the sampler settings come from inference.yaml.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

from common.bundle_utils import load_weights
from common.datalist import select_items
from common.diffusion import residual_to_image, suv_to_network
from common.diffusion_inferer import DiffusionSamplingInferer
from common.io.nifti import load_nifti
from common.metrics import psnr, reference_max

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "inference.yaml"


def sampler(parser: ConfigParser, steps: int, temperature: float = 1.0) -> DiffusionSamplingInferer:
    """The bundle's ``inferer`` as ``parser`` (inference.yaml) defines it, set to deterministic DDIM with ``steps``
    steps, one sample per call and the given ``temperature`` (the one-step estimate always uses 1: from pure noise
    the network's x_0 is the posterior-mean estimate). ``parser`` itself is left unchanged."""
    config = ConfigParser(copy.deepcopy(parser.get()))
    overrides = {
        "sampler": "ddim",
        "eta": 0.0,
        "num_inference_steps": steps,
        "num_samples": 1,
        "temperature": temperature,
    }
    for key, value in overrides.items():
        config[key] = value
    return config.get_parsed_content("inferer")


def study(
    net: torch.nn.Module,
    parser: ConfigParser,
    low_suv: np.ndarray,
    full_suv: np.ndarray,
    samples: int,
    steps: int,
    temperature: float = 1.0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """PSNRs (dB) of one volume ``(X, Y, Z)`` in SUV: ``input``, ``one_step``, ``mean_<n>`` for n = 1, 2, 4, ..
    <= ``samples`` (drawn at ``temperature``), and the samples' ``spread`` (see the module docstring; the samples'
    variance is divided by ``temperature ** 2``, as the sampler's std channel). The sampling runs on ``device``, where
    ``net`` must already be."""
    suv_max, k = float(parser["suv_max"]), parser["residual_scale"]
    cond = suv_to_network(low_suv, suv_max).float()[None, None].to(device)

    def to_suv(sample: torch.Tensor) -> np.ndarray:
        out = residual_to_image(sample, cond, k, parser["residual_norm"], parser["residual_floor"]) if k else sample
        return ((out[0, 0] + 1) * suv_max / 2).double().cpu().numpy()

    peak = reference_max(full_suv)
    res = {"input": psnr(low_suv, full_suv, peak)}
    with torch.no_grad():
        res["one_step"] = psnr(to_suv(sampler(parser, 1).sample(cond, net, 0)), full_suv, peak)
        many = sampler(parser, steps, temperature)
        outs = [to_suv(many.sample(cond, net, i)) for i in range(samples)]
    n = 1
    while n <= samples:
        res[f"mean_{n}"] = psnr(np.mean(outs[:n], axis=0), full_suv, peak)
        n *= 2
    mean = np.mean(outs, axis=0)
    mse = float(((mean - full_suv) ** 2).mean())
    res["spread"] = (  # nan when undefined: one sample, or a mean without error (an exact oracle)
        float(np.mean([((o - mean) ** 2).mean() for o in outs]) * samples / (samples - 1)) / temperature**2 / mse
        if samples > 1 and mse > 0
        else float("nan")
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", required=True, type=Path)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--split", default="validation")
    ap.add_argument("--drf", type=float, default=20)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the n samples")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    net = load_weights(parser.get_parsed_content("network_def").eval(), str(a.checkpoint), "DDPM weights").to(a.device)
    items = select_items(json.loads(a.datalist.read_text())[a.split], "drf", [a.drf], str(a.datalist))
    rows = []
    for it in items:
        low, full = (
            load_nifti(a.datalist.parent / it[key], check_finite=True)[0].astype(np.float64)
            for key in ("image", "label")
        )
        res = study(net, parser, low, full, a.samples, a.steps, a.temperature, a.device)
        rows.append(res)
        print(Path(it["image"]).name, {k: round(v, 3) for k, v in res.items()}, flush=True)
    keys = list(rows[0])
    print("| volume | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for it, res in zip(items, rows, strict=True):
        print(f"| {Path(it['image']).name} | " + " | ".join(f"{res[k]:.2f}" for k in keys) + " |")
    print("| mean | " + " | ".join(f"{np.mean([r[k] for r in rows]):.2f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
