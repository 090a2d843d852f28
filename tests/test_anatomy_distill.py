"""ct_lowdose_anatomy_distill: NAFNet blocks, teacher / dose-conditioned student, distillation loss, the teacher kept
frozen through student training (in memory and through the bundle's two-stage run), and inference needing a dose."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, run_bundle, run_bundle_steps, run_workflow
from monai.bundle import ConfigParser

from common.losses import DistillationLoss, L1SSIMLoss, SobelGradientLoss
from common.networks.nafnet import (
    TANH_INVERSE_COEFFS,
    NAFAutoencoder,
    NAFBlock,
    NAFStudent,
    StudentWithIntermediates,
    load_teacher_into_student,
    student_param_groups,
)

BUNDLE = ROOT / "bundles" / "ct_lowdose_anatomy_distill"
CONFIGS = BUNDLE / "configs"
SMALL = dict(width=8, num_blocks=2, latent_channels=64)
SMALL_TEACHER = dict(SMALL, compensate_tanh=False)  # too narrow for the tanh compensation


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_specification():
    teacher, student = NAFAutoencoder(), NAFStudent()
    for got, want in (
        (_count(teacher.encoder), 4.3e6),
        (_count(student.encoder), 4.5e6),
        (_count(teacher.decoder), 4.3e6),
    ):
        assert abs(got - want) / want < 0.03, (got, want)


def test_nafblock_starts_as_identity_and_learns():
    block = NAFBlock(16)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), x)
    torch.nn.init.constant_(block.beta, 0.5)
    assert not torch.allclose(block(x), x)


def test_teacher_starts_as_tanh_of_its_input():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 24, 40) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(NAFAutoencoder(**SMALL_TEACHER)(x), torch.tanh(x))  # lossless via the 1/8 latent
        assert not torch.allclose(NAFAutoencoder(identity_start=False, **SMALL)(x), torch.tanh(x))


def _horner(coeffs: tuple[float, ...], x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """p(x) = x q(x^2) by Horner, and the largest |intermediate| (what the decoder channels must hold)."""
    u, h = x * x, torch.full_like(x, coeffs[-1])
    largest = h.abs().max().item()
    for a in reversed(coeffs[:-1]):
        h = h * u + a
        largest = max(largest, h.abs().max().item())
    return x * h, largest


def test_tanh_inverse_polynomials():
    x = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    assert (torch.tanh(x) - x).abs().max() > 0.2  # what the plain identity start gives instead
    max_err = {2: 0.029, 3: 0.017, 4: 0.011, 5: 0.0077, 6: 0.0072}  # the figures stated beside the table
    for m, coeffs in TANH_INVERSE_COEFFS.items():
        p, largest = _horner(coeffs, x)
        err = (torch.tanh(p) - x).abs()
        assert len(coeffs) == m + 1 and err.max() < max_err[m] and err[[0, -1]].max() < max_err[m]  # clip limits too
        assert largest < (14.0 if m == 6 else 31.0)  # the Horner state the decoder channels hold
    rms = [(torch.tanh(_horner(c, x)[0]) - x).pow(2).mean().sqrt() for c in TANH_INVERSE_COEFFS.values()]
    assert all(
        a > b for a, b in zip(rms[:-1], rms[1:], strict=True)
    )  # each higher degree is better on the whole window


def _ffn_out(net: NAFAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """Decoder body after its blocks: what the up-sampling path sees."""
    z, _ = net.encoder(x)
    return net.decoder.blocks(net.decoder.from_latent(z))


def test_teacher_with_tanh_compensation_starts_as_the_identity():
    """Default teacher (8 blocks: degree-13 polynomial): every pixel leaves the decoder blocks as p(x) with
    tanh(p(x)) ~ x, for any image content (the LayerNorms see a constant channel that pins their sigma); the helper
    channels (x^2, Horner state, constant) are back at 0 before the up-sampling path; too small a network is
    refused."""
    torch.manual_seed(0)
    net = NAFAutoencoder(width=32, num_blocks=8, latent_channels=64).eval()
    x = torch.cat([torch.rand(2, 1, 32, 48) * 2 - 1, torch.full((1, 1, 32, 48), -1.0), torch.zeros(1, 1, 32, 48)])
    x[3, :, 8:24, 8:24] = 1.0  # bone block in soft tissue
    with torch.no_grad():
        y, body = net(x), _ffn_out(net, x)
    exact = torch.tanh(_horner(TANH_INVERSE_COEFFS[6], x.double())[0])
    assert (y.double() - exact).abs().max() < 2e-4  # the blocks compute the polynomial (0.2 HU)
    assert (y - x).abs().max() < 0.0075
    assert body[:, 64 : 3 * 64 + 2].abs().max() < 1e-3 and body[:, :64].abs().max() > 1.0  # x carries p(x)
    plain = NAFAutoencoder(width=32, num_blocks=8, latent_channels=64, compensate_tanh=False).eval()
    with torch.no_grad():
        assert (plain(x) - x).abs().max() > 0.2
    with pytest.raises(ValueError, match="tanh compensation needs >= 4 decoder blocks"):
        NAFAutoencoder(**SMALL)
    with pytest.raises(ValueError, match="tanh compensation needs >= 256 body channels"):
        NAFAutoencoder(width=24, num_blocks=8, latent_channels=64)


def test_tanh_compensated_teacher_survives_a_first_adam_step():
    """Regression: with trainable FFN LayerNorm affines in the structured blocks, one AdamW step at the teacher's
    lr (3e-5) took the L1 + SSIM loss from 0.001 to 0.55 (their steps reach the products sigma-fold); they are
    frozen at (1, 0) (redundant with conv4) and the loss stays within a few times the start."""
    torch.manual_seed(0)
    net = NAFAutoencoder()
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen == [f"decoder.blocks.{i}.norm2.{w}" for i in range(8) for w in ("weight", "bias")]
    loss_fn = L1SSIMLoss(spatial_dims=2, l1_weight=1.0, ssim_weight=0.5, data_range=2.0, win_size=11)
    x = (torch.nn.functional.avg_pool2d(torch.rand(4, 1, 64, 64) * 2 - 1, 5, 1, 2) * 3).clamp(-1, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-5, weight_decay=1e-4)
    before = loss_fn(net(x), x)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn(net(x), x)
    assert before.item() < 2e-3 and after.item() < 0.02


def test_student_starts_as_teacher_and_dose_conditions_after_training():
    torch.manual_seed(0)
    teacher = NAFAutoencoder(**SMALL_TEACHER).eval()
    student = load_teacher_into_student(NAFStudent(**SMALL), teacher).eval()
    x = torch.rand(2, 1, 16, 24) * 2 - 1
    with torch.no_grad():
        for dose in (0.1, 0.7):
            torch.testing.assert_close(student(x, torch.full((2, 1), dose)), teacher(x))  # SFT starts as identity
        for block in student.encoder.blocks:
            torch.nn.init.normal_(block.sft.proj.weight, std=0.3)
        low, high = student(x, torch.full((2, 1), 0.1)), student(x, torch.full((2, 1), 0.7))
    assert not torch.allclose(low, high)
    assert not any(p.requires_grad for p in student.decoder.parameters())
    with pytest.raises(ValueError, match="dose"):
        student(x)
    with pytest.raises(ValueError, match="multiple of 8"):
        student(torch.rand(1, 1, 12, 16), torch.ones(1, 1))


def test_student_param_groups_split_the_carrying_path():
    student = load_teacher_into_student(NAFStudent(**SMALL), NAFAutoencoder(**SMALL_TEACHER))
    body, carry = student_param_groups(student, 5e-4, 0.05)
    assert body["lr"] == 5e-4 and carry["lr"] == pytest.approx(2.5e-5)
    ids = {id(p) for g in (body, carry) for p in g["params"]}
    assert ids == {id(p) for p in student.encoder.parameters()}  # every encoder weight once, no decoder weight
    assert len(ids) == len(body["params"]) + len(carry["params"])
    assert any(p is student.encoder.intro.weight for p in carry["params"])
    assert any(p is student.encoder.blocks[0].sft.proj.weight for p in body["params"])
    assert any(p is student.encoder.embed.mlp[0].weight for p in body["params"])


def test_no_dose_ablation_ignores_the_dose():
    torch.manual_seed(0)
    net = NAFStudent(dose_conditioned=False, **SMALL).eval()
    assert net.encoder.embed is None and all(b.sft is None for b in net.encoder.blocks)
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x, torch.tensor([[0.1]])), net(x, torch.tensor([[0.7]])))
        torch.testing.assert_close(net(x), net(x, torch.tensor([[0.7]])))
    with pytest.raises(TypeError, match="True or False"):
        NAFStudent(dose_conditioned="false", **SMALL)  # `--dose_conditioned false` on the command line


def test_sobel_gradient_loss():
    loss = SobelGradientLoss()
    x = torch.rand(2, 1, 16, 16)
    assert loss(x, x).item() == 0.0
    assert loss(x + 0.3, x).item() == pytest.approx(0.0, abs=1e-6)  # offsets have no gradient
    assert loss(torch.roll(x, 1, dims=-1), x).item() > 0.01


def test_distillation_loss_terms_and_frozen_teacher():
    torch.manual_seed(0)
    teacher = NAFAutoencoder(**SMALL_TEACHER)
    student = load_teacher_into_student(NAFStudent(**SMALL), teacher)
    loss = DistillationLoss(teacher.encoder).train()
    assert not teacher.encoder.training and not any(p.requires_grad for p in teacher.encoder.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    view = StudentWithIntermediates(student)
    target = torch.rand(2, 1, 32, 32) * 2 - 1
    dose = torch.tensor([[0.25], [0.5]])
    loss(view(target, dose), target)  # student = teacher and input = target: no latent / feature distance
    assert loss.last_terms["latent"] == pytest.approx(0.0, abs=1e-10)
    assert loss.last_terms["feature"] == pytest.approx(0.0, abs=1e-10)
    noisy = target + 0.2 * torch.randn_like(target)
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    value = loss(view(noisy, dose), target)
    assert loss.last_terms["latent"] > 0 and loss.last_terms["feature"] > 0 and loss.last_terms["gradient"] > 0
    value.backward()
    opt.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # teacher encoder and (shared, frozen) decoder unchanged
    torch.testing.assert_close(student.decoder.state_dict(), teacher.decoder.state_dict())
    assert not torch.equal(student.encoder.intro.weight, teacher.encoder.intro.weight)  # the student learned


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_two_stage_training_keeps_the_teacher_frozen(tmp_path, data_cache):
    """train.yaml runs the teacher stage when its checkpoint is missing; the student's epochs leave the teacher
    checkpoint and the teacher decoder inside the student bit-identical, while the student encoder changes."""
    train = f"['{CONFIGS / 'train.yaml'}','{CONFIGS / 'smoke.yaml'}']"
    common = [f"--ckpt_dir={tmp_path / 'models'}", f"--output_dir={tmp_path / 'eval'}",
              f"--data_cache_dir={data_cache / 'distill'}"]  # fmt: skip
    keep = tmp_path / "epoch1"  # the checkpoints after the first run
    out, _, _ = run_bundle_steps(  # both trainings in one process (tests/bundle_steps.py)
        [
            (ROOT, ["run", "training", "--config_file", train, "--max_epochs=1", *common]),
            ("snapshot", [tmp_path / "models", keep]),
            (ROOT, ["run", "training", "--config_file", train, "--max_epochs=2", *common]),
        ],
        tmp_path,
    )
    teacher_ckpt = tmp_path / "models" / "teacher" / "model.pt"
    assert teacher_ckpt.is_file() and "teacher" in out
    sha = _sha(keep / "teacher" / "model.pt")
    teacher = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)
    first = torch.load(keep / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    second = torch.load(tmp_path / "models" / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
    assert _sha(teacher_ckpt) == sha  # stage 1 did not run again and nothing rewrote it
    for state in (first, second):
        for k, v in teacher.items():
            if k.startswith("decoder."):
                assert torch.equal(state[k], v), k
    assert not torch.equal(first["encoder.intro.weight"], second["encoder.intro.weight"])
    sft = [k for k in second if ".sft." in k]
    assert sft and any(not torch.equal(first[k], second[k]) for k in sft)  # the dose conditioning trains


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distill_models")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "model.pt")
    return folder


def _ct(path, shape=(37, 30, 2)):
    data = np.full(shape, -1000.0, np.float32)
    data[4:-4, 4:-4] = 40.0
    affine = np.array([[-0.8, 0, 0, 5.0], [0, 0.8, 0, -3.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return data, affine


@pytest.mark.slow
def test_inference_needs_the_dose_and_keeps_geometry(tmp_path, weights):
    path = tmp_path / "in" / "ct.nii.gz"
    data, affine = _ct(path)
    line = run_workflow(  # in-process: the refusal's text (tests/test_bad_input.py runs the real command)
        [CONFIGS / "inference.yaml"], input_file=str(path), ckpt_dir=str(weights), output_dir=str(tmp_path / "out")
    )
    assert line is not None and "ct.nii.gz: missing dose metadata 'dose'" in line, line
    assert not list((tmp_path / "out").glob("*.nii.gz"))
    run_bundle(["run", "--config_file", str(CONFIGS / "inference.yaml"), f"--input_file={path}", "--dose=0.25",
                f"--ckpt_dir={weights}", f"--output_dir={tmp_path / 'out'}"])  # fmt: skip
    img = nib.load(str(next((tmp_path / "out").glob("*denoised.nii.gz"))))
    assert img.shape == data.shape
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    out = img.get_fdata()
    assert np.isfinite(out).all() and out.min() >= -1000.001 and out.max() <= 1000.001  # tanh range, in HU


def test_config_dose_switch_builds_the_ablation():
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser["dose_conditioned"] = False
    net = parser.get_parsed_content("network_def")
    assert net.encoder.embed is None


def test_error_by_region_script_splits_the_mse():
    """The error split of scripts/error_by_region.py: the regions partition the volume, the columns add up to the
    MSE, and an error placed outside the body lands in that column only."""
    mod = load_script(BUNDLE / "scripts" / "error_by_region.py")
    ref = np.full((40, 40, 3), -1000.0)
    ref[10:30, 10:30] = 40.0
    ref[18:22, 18:22] = 900.0  # bone insert: edges inside the body
    masks = mod.regions(ref)
    assert sum(m.astype(int) for m in masks.values()).max() == 1 and sum(m.sum() for m in masks.values()) == ref.size
    out = ref.copy()
    out[:5] += 100.0  # error only outside the body
    inp = ref + np.random.default_rng(0).normal(0, 20, ref.shape)
    res = mod.split_error([(inp, out, ref)])
    assert res["edge"]["output"] == 0.0 and res["inside"]["output"] == 0.0 and res["outside"]["output"] > 0
    mse_in = float((((np.clip(inp, -1000, 1000) - ref) / 2000) ** 2).mean())
    assert sum(r["input"] for r in res.values()) == pytest.approx(mse_in, rel=1e-9)
    with pytest.raises(ValueError, match="shapes differ"):
        mod.split_error([(inp, out[:-1], ref)])


def test_teacher_reconstruction_script_measures_the_start():
    """scripts/teacher_reconstruction.py: the untrained default teacher reconstructs a phantom with air, soft tissue
    and bone within a few HU in every region (the tanh-compensated identity start); the plain tanh(x) start does
    not."""
    mod = load_script(BUNDLE / "scripts" / "teacher_reconstruction.py")
    ref = np.full((64, 64, 3), -1000.0)
    ref[8:56, 8:56] = -950.0 + 30 * np.random.default_rng(0).standard_normal((48, 48, 3))  # low-contrast background
    ref[16:48, 16:48] = 40.0
    ref[28:36, 28:36] = 1200.0  # clipped bone
    torch.manual_seed(0)
    res = mod.summarise([(mod.reconstruct(NAFAutoencoder().eval(), ref), ref)])
    assert res["psnr"] > 50.0 and max(res[f"{r}_rms_hu"] for r in ("outside", "edge", "inside")) < 8.0
    plain = mod.summarise([(mod.reconstruct(NAFAutoencoder(compensate_tanh=False).eval(), ref), ref)])
    assert plain["psnr"] < 30.0
