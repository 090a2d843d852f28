"""The weights shipped in the bundles (``pretrained/model.pt``, listed in ``large_files.yml``): every bundle has them,
their sha256 verifies with MONAI's own ``download_large_files``, they load strictly into the inference network,
sizes stay within the clone budget, and inference picks them only when no trained weights are there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import BUNDLES
from monai.bundle import download_large_files

from common.bundle_utils import PRETRAINED_WEIGHTS, resolve_weights
from restorezoo.export import _inference_network
from restorezoo.pretrained import MAX_FILE_BYTES, MAX_TOTAL_BYTES, sha256, ship_weights, shipped_weights

IDS = [b.name for b in BUNDLES]


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_every_bundle_ships_verified_weights_that_fit_its_network(bundle):
    listed = shipped_weights(bundle)
    assert [w.path for w in listed] == [bundle / PRETRAINED_WEIGHTS], "large_files.yml must list pretrained/model.pt"
    download_large_files(bundle_path=str(bundle))  # raises when the present file's sha256 differs; downloads nothing
    assert sha256(listed[0].path) == listed[0].sha256
    assert 0 < listed[0].size <= MAX_FILE_BYTES
    _inference_network(bundle, bundle / PRETRAINED_WEIGHTS)  # strict load: every key and shape


def test_shipped_weights_fit_the_clone_budget():
    sizes = {b.name: sum(w.size for w in shipped_weights(b)) for b in BUNDLES}
    assert sum(sizes.values()) <= MAX_TOTAL_BYTES, sizes


def test_a_changed_file_fails_verification(tmp_path):
    bundle = next(b for b in BUNDLES if b.name == "ct_lowdose_featkpn")
    (tmp_path / "pretrained").mkdir()
    (tmp_path / PRETRAINED_WEIGHTS).write_bytes((bundle / PRETRAINED_WEIGHTS).read_bytes()[:-1] + b"x")
    (tmp_path / "large_files.yml").write_text((bundle / "large_files.yml").read_text())
    with pytest.raises(Exception, match="hash check of existing file failed"):
        download_large_files(bundle_path=str(tmp_path))


def test_ship_writes_half_precision_that_loads_into_the_fp32_network(tmp_path):
    bundle = next(b for b in BUNDLES if b.name == "ct_lowdose_featkpn")
    copy = tmp_path / bundle.name
    (copy / "configs").mkdir(parents=True)
    for f in (bundle / "configs").iterdir():
        (copy / "configs" / f.name).write_text(f.read_text())
    res = ship_weights(copy, bundle / PRETRAINED_WEIGHTS, half=True)
    assert res.dtype == "float16" and res.size < 0.6 * (bundle / PRETRAINED_WEIGHTS).stat().st_size
    listing = yaml.safe_load((copy / "large_files.yml").read_text())["large_files"]
    assert listing == [{"path": PRETRAINED_WEIGHTS, "url": "", "hash_val": res.sha256, "hash_type": "sha256"}]
    net, _ = _inference_network(copy, res.path)
    full, _ = _inference_network(copy, bundle / PRETRAINED_WEIGHTS)
    for (k, a), b in zip(net.state_dict().items(), full.state_dict().values(), strict=True):
        assert a.dtype == b.dtype, k  # cast back to the network's dtype on load
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-3)
    with pytest.raises(RuntimeError, match="do not fit the configured network"):
        ship_weights(copy, _tiny_state(tmp_path))


def _tiny_state(tmp_path: Path) -> Path:
    path = tmp_path / "wrong.pt"
    torch.save({"not_a_layer.weight": torch.zeros(1)}, path)
    return path


def test_inference_prefers_trained_weights_and_never_replaces_a_chosen_folder(tmp_path):
    root = tmp_path / "bundle"
    (root / "pretrained").mkdir(parents=True)
    (root / PRETRAINED_WEIGHTS).write_bytes(b"shipped")
    assert resolve_weights(root / "models", root) == str(root / PRETRAINED_WEIGHTS)  # fresh clone
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(b"trained")
    assert resolve_weights(root / "models", root) == str(root / "models" / "model.pt")  # after a training
    chosen = tmp_path / "elsewhere"
    assert resolve_weights(chosen, root) == str(chosen / "model.pt")  # --ckpt_dir: refused later if missing


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_trainings_never_write_the_shipped_weights(bundle):
    """Every training config of a bundle (and its overlays) writes its checkpoints outside ``pretrained/``."""
    configs = bundle / "configs"
    for files in (
        [configs / "train.yaml"],
        *([configs / "train.yaml", f] for f in sorted(configs.glob("train_*.yaml")) if f.name != "train_teacher.yaml"),
        *([f] for f in configs.glob("train_teacher.yaml")),
    ):
        ckpt_dir = Path(_parser(bundle, files).get_parsed_content("ckpt_dir")).resolve()
        assert ckpt_dir != (bundle / "pretrained").resolve() and not ckpt_dir.is_relative_to(bundle / "pretrained")


def _parser(bundle: Path, files: list[Path]):
    """The merged config ``files`` of ``bundle``, as ``python -m monai.bundle run`` reads them from any folder."""
    from monai.bundle import ConfigParser

    from common.configs import load_config_files

    parser = ConfigParser(load_config_files(files))
    parser["bundle_root"] = str(bundle)
    return parser


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_every_bundle_has_a_full_recipe_longer_than_its_demo(bundle):
    """``configs/train_full.yaml`` (the recipe the shipped weights come from) is an overlay that trains longer than the
    minutes-long default, into its own ``models_full/``, with a learning-rate schedule that still ends at the last
    epoch (a cosine schedule's period is the number of epochs, not the default's)."""
    configs = bundle / "configs"
    default = _parser(bundle, [configs / "train.yaml"])
    parser = _parser(bundle, [configs / "train.yaml", configs / "train_full.yaml"])
    epochs, ckpt_dir = parser.get_parsed_content("max_epochs"), Path(parser.get_parsed_content("ckpt_dir"))
    assert epochs > default.get_parsed_content("max_epochs")
    assert ckpt_dir.name == "models_full" and ckpt_dir != Path(default.get_parsed_content("ckpt_dir"))
    val_interval = parser.get_parsed_content("val_interval")
    assert epochs % val_interval == 0, "the last epoch must be validated (the best checkpoint is chosen there)"
    if "CosineAnnealingLR" in str(parser.get("lr_scheduler")):
        parser["network"] = torch.nn.Linear(1, 1)  # the schedule only needs an optimiser's parameters
        parser["optimizer"] = torch.optim.SGD(parser["network"].parameters(), lr=1.0)
        assert parser.get_parsed_content("lr_scheduler").T_max == epochs
    else:  # Feat-KPN keeps the original's per-epoch exponential decay
        assert "ExponentialLR" in str(parser.get("lr_scheduler")), "a new schedule needs its own check here"


def test_featkpn_clinical_overlay_adds_clinical_volumes_at_the_full_recipes_iterations(tmp_path):
    """``train_clinical.yaml`` (on the full recipe) appends the shared clinical-sampling volumes to the training items,
    each with its noise-free phantom (so the full recipe's fresh noise reaches them too), from their own cache and
    phantom seed; with twice the volumes it trains half the epochs at the squared per-epoch decay, i.e. the full
    recipe's iterations and learning-rate curve. Tiny grids stand in for the 512 x 512 slabs."""
    bundle = BUNDLES[[b.name for b in BUNDLES].index("ct_lowdose_featkpn")]
    configs = bundle / "configs"
    full_files = [configs / "train.yaml", configs / "train_full.yaml"]
    clinical_files = [*full_files, configs / "train_clinical.yaml"]
    smoke = yaml.safe_load((configs / "smoke.yaml").read_text())
    piece = yaml.safe_load((bundle.parent.parent / "common" / "configs" / "train.yaml").read_text())
    clinical_piece = piece["ct_clinical_datalist"]
    clinical_piece["data_cache_dir"] = str(tmp_path / "clinical")
    clinical_piece["phantom_kwargs"].update(
        n_train=2,
        doses=[0.25],
        grids=smoke["phantom_kwargs"]["grids"],
        acquisition=smoke["phantom_kwargs"]["acquisition"],
    )
    parsers = [_parser(bundle, files) for files in (full_files, clinical_files)]
    for parser in parsers:
        parser.update({"phantom_kwargs": smoke["phantom_kwargs"], "data_cache_dir": str(tmp_path / "ct")})
        parser["output_dir"] = str(tmp_path / "out")
    parsers[1]["ct_clinical_datalist"] = clinical_piece
    full, clinical = (p.get_parsed_content("train#items") for p in parsers)

    assert clinical[: len(full)] == full and len(clinical) == len(full) + 2
    extra = clinical[len(full) :]
    assert all(Path(item["image"]).is_relative_to(tmp_path / "clinical") for item in extra)
    assert all(Path(item["phantom_hu"]).is_file() and item["dose"] == 0.25 for item in extra)
    assert not {item["phantom"]["seed"] for item in extra} & {item["phantom"]["seed"] for item in full}
    epochs = [p.get_parsed_content("max_epochs") for p in parsers]
    decay = [p.get_parsed_content("lr_decay") for p in parsers]
    assert epochs[0] * len(full) == epochs[1] * len(clinical)
    assert decay[0] ** epochs[0] == pytest.approx(decay[1] ** epochs[1], rel=1e-9)
    assert Path(parsers[1].get_parsed_content("ckpt_dir")).name == "models_clinical"


def test_half_storage_keeps_tensors_beyond_float16_range():
    from restorezoo.pretrained import _half

    big = torch.tensor([1.0e-3, 1.0e5])  # e.g. the distillation decoder's constant 1e5 channel
    assert _half(big).dtype == torch.float32 and torch.equal(_half(big), big)
    small = torch.tensor([1.0e-3, 6.0e4])
    assert _half(small).dtype == torch.float16
    assert _half(torch.arange(3)).dtype == torch.int64
