"""The networks follow one convention: MONAI's ``(spatial_dims, in_channels, out_channels, ...)`` first, one name for
the conditioning input (``dose``: the encoded dose, ``(B, dose_dim)``; MONAI's ``sliding_window_inference`` reserves
``condition`` for spatial conditioning images), a docstring example that runs and produces the shape it states, and
every network exported from ``common.networks``."""

from __future__ import annotations

import inspect
import json
import math
import re
import textwrap

import pytest
import torch
from conftest import BUNDLES

import common.networks as networks

NETWORKS = [
    networks.FiLMUNet,
    networks.FeatKPN,
    networks.ThroughPlaneSRNet,
    networks.NAFAutoencoder,
    networks.NAFStudent,
    networks.AnatomyUNet,
]
CONDITIONED = [networks.FiLMUNet, networks.NAFStudent]


@pytest.mark.parametrize("cls", NETWORKS, ids=lambda c: c.__name__)
def test_monai_argument_order_and_export(cls):
    params = list(inspect.signature(cls.__init__).parameters)[1:4]
    assert params == ["spatial_dims", "in_channels", "out_channels"], f"{cls.__name__}: {params}"
    assert cls.__name__ in networks.__all__


@pytest.mark.parametrize("cls", CONDITIONED, ids=lambda c: c.__name__)
def test_one_name_for_the_conditioning_input(cls):
    params = list(inspect.signature(cls.forward).parameters)
    assert params[:3] == ["self", "x", "dose"], f"{cls.__name__}.forward{params}"


def _example(cls) -> tuple[str, tuple[int, ...]]:
    doc = inspect.getdoc(cls) or ""
    assert "Example::" in doc, f"{cls.__name__} has no docstring example"
    block = doc.split("Example::", 1)[1].split("\n\n", 2)[1]
    code = textwrap.dedent(block)
    shape = re.search(r"#\s*\(([\d, ]+)\)", code)
    assert shape, f"{cls.__name__}: the example states no output shape"
    return code, tuple(int(v) for v in shape.group(1).split(","))


@pytest.mark.parametrize("cls", NETWORKS, ids=lambda c: c.__name__)
def test_docstring_example_runs_and_gives_the_stated_shape(cls):
    code, shape = _example(cls)
    scope = {"torch": torch, "math": math, cls.__name__: cls}
    torch.manual_seed(0)
    with torch.no_grad():
        exec(code, scope)  # noqa: S102 - the project's own docstring
    result = [v for k, v in scope.items() if isinstance(v, torch.Tensor)][-1]
    assert tuple(result.shape) == shape


@pytest.mark.parametrize(
    ("cls", "dims"),
    [(networks.FeatKPN, 3), (networks.NAFAutoencoder, 3), (networks.NAFStudent, 3), (networks.ThroughPlaneSRNet, 2)],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_unsupported_spatial_dims_are_refused(cls, dims):
    with pytest.raises(ValueError, match="spatial_dims"):
        cls(spatial_dims=dims)


def test_throughplane_sr_channels():
    net = networks.ThroughPlaneSRNet(in_channels=2, out_channels=2, factor=2, channels=(8, 16), hr_channels=4)
    assert net(torch.rand(1, 2, 16, 16, 3)).shape == (1, 2, 16, 16, 6)
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        networks.ThroughPlaneSRNet(in_channels=2, out_channels=1)


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_metadata_describes_the_served_network(bundle):
    """What ``metadata.json`` says of the network (MONAI Label shows it in ``/info/``) is the inference network:
    the parameter count it quotes (``~1.00 M parameters``) and the widths (``widths 16-32-64``)."""
    from monai.bundle import ConfigParser

    from common.configs import load_config_files

    text = json.loads((bundle / "configs" / "metadata.json").read_text())["description"]
    parser = ConfigParser()
    parser.read_config(load_config_files(bundle / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def", instantiate=True)
    count = sum(p.numel() for p in net.parameters()) / 1e6
    for quoted in re.findall(r"(?:~|about )([\d.]+) M parameters", text):
        assert abs(float(quoted) - count) <= 0.01 + 0.02 * count, f"{bundle.name}: says {quoted} M, has {count:.3f} M"
    for quoted in re.findall(r"widths (\d+(?:-\d+)+)", text):
        channels = parser.get_parsed_content("network_def#channels")
        assert [int(c) for c in quoted.split("-")] == [int(c) for c in channels], f"{bundle.name}: widths {quoted}"
