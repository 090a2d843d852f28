"""``restorezoo``: the project's command line for everything that is not ``python -m monai.bundle run``.

Commands (``restorezoo <command> --help`` for each)::

    restorezoo data pet|ct|ct_sr [--out DIR] [--force]        build/refresh the embedded default dataset
    restorezoo simulate-ct IN.nii.gz OUT.nii.gz --dose 0.25   projection-domain low-dose CT from a HU volume
    restorezoo simulate-pet IN.nii.gz OUT.nii.gz --drf 20     low-count PET (fast route, or --route sinogram --mu MU)
    restorezoo simulate-thick IN.nii.gz OUT.nii.gz --factor 4 thick slices (Gaussian profile, FWHM = thickness)
    restorezoo dicom2nifti SERIES_DIR OUT.nii.gz              DICOM / IMA series -> NIfTI (CT in HU, PET in SUVbw)
    restorezoo validate bundles/<name> [--overlays a.yaml,b]  static bundle validation (as CI does)
    restorezoo export bundles/<name> [--out dist] [--ckpt P]  self-contained model-zoo release folder + zip
    restorezoo ship bundles/<name> --ckpt P [--half]          make P the bundle's shipped pretrained/model.pt
    restorezoo denoise SCAN [--bundle B] [--drf N | --dose F | --factor K] [--out P]   restore a scan (shipped weights)
    restorezoo benchmark [--bundles_dir bundles] [--bundles a,b] [--train] [--readme README.md]   vs baselines + speed
    restorezoo speed bundles/<name> [--bundle_inferer] [--input_shape X,Y,Z]   voxels/s and peak memory vs MONAI UNet

Inputs are never modified; outputs are written atomically and may not be the input file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import InputDataError

__all__ = ["main"]


def _load_input(
    inp: str, out: str, kind: str, ndims: tuple[int, ...] = (3,), allow_implausible: bool = False
) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Read the input as the bundles do (:func:`common.io.load_volume`: a NIfTI file or a DICOM series folder,
    CT in HU, PET in SUV), check it is not the output, has ``ndims`` dimensions and passes
    :func:`common.transforms.validate_image` for ``kind`` (``"ct"``: HU, ``"pet"``: SUV, ``"any"``: no unit checks);
    returns ``(input, output, array, affine)``."""
    from common.io import load_volume
    from common.transforms.validation import validate_image

    i, o = Path(inp).expanduser(), Path(out).expanduser()
    if o.resolve() == i.resolve():
        raise InputDataError(i, "output path is the input path: refusing to overwrite the input")
    volume = load_volume(i, modality={"ct": "CT", "pet": "PT"}.get(kind))
    if volume.ndim not in ndims:
        kinds = " or ".join(f"{n}D" for n in ndims)
        raise InputDataError(i, f"expected a {kinds} image, got shape {tuple(volume.shape)}")
    validate_image(
        volume,
        str(i),
        kind=kind,
        spatial_dims=volume.ndim,
        channel_first=False,
        min_size=1,
        allow_implausible=allow_implausible,
        allow_constant=True,
    )
    array, affine = volume.numpy().astype(np.float32), volume.affine.numpy().astype(np.float64)
    return i, o, array, affine


def _spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes in mm (nibabel's column norms of the affine)."""
    from nibabel.affines import voxel_sizes

    return voxel_sizes(affine)


def data(kind: str = "pet", out: str | None = None, force: bool = False, seed: int = 0) -> str:
    """Build (or reuse from the cache) the embedded default dataset ``kind`` in {pet, ct, ct_sr}; prints the
    datalist path. Default folder: ``$RESTOREZOO_DATA/<kind>`` or ``~/.cache/restorezoo/<kind>``."""
    from common import phantoms

    builders = {
        "pet": phantoms.build_pet_dataset,
        "ct": phantoms.build_ct_dataset,
        "ct_sr": phantoms.build_ct_sr_dataset,
    }
    if kind not in builders:
        raise SystemExit(f"unknown kind {kind!r}: choose one of {sorted(builders)}")
    path = builders[kind](out or phantoms.default_data_dir(kind), seed=seed, force=force)
    print(path)
    return str(path)


def simulate_ct(
    input: str,
    output: str,
    dose: float,
    seed: int = 0,
    i0: float = 1e5,
    n_views: int = 720,
    electronic_noise_std: float = 10.0,
    allow_implausible: bool = False,
) -> str:
    """Simulate a low-dose CT (dose fraction in (0, 1]) from a normal-dose NIfTI volume in HU, slice by slice in
    the projection domain (in-plane pixel size read from the affine; square in-plane pixels required)."""
    from common.io import save_nifti
    from common.physics import CTAcquisition, CTLowDoseSimulator

    i, o, hu, affine = _load_input(input, output, "ct", ndims=(2, 3), allow_implausible=allow_implausible)
    sp = _spacing(affine)
    if not np.isclose(sp[0], sp[1], rtol=1e-3):
        raise InputDataError(i, f"in-plane pixels must be square for the projector, got {sp[:2]} mm")
    acq = CTAcquisition(i0=i0, n_views=n_views, electronic_noise_std=electronic_noise_std)
    low = CTLowDoseSimulator(hu, float(sp[0]), acq).simulate(dose, seed)
    save_nifti(low, affine, o)
    print(o)
    return str(o)


def simulate_pet(
    input: str,
    output: str,
    drf: float,
    seed: int = 0,
    route: str = "fast",
    mu: str | None = None,
    reference_suv: float = 2.0,
    rel_noise_drf1: float = 0.023,
    sigma_vox: float = 1.0,
    allow_implausible: bool = False,
) -> str:
    """Simulate a low-count PET at dose-reduction factor ``drf`` from a full-dose NIfTI (SUV).

    ``route=fast``: calibrated image-domain count reduction (noise ``rel_noise_drf1`` at DRF 1 in a region of
    ``reference_suv``). ``route=sinogram``: attenuation (``--mu`` NIfTI, 1/mm at 511 keV), randoms + scatter,
    Poisson, OSEM."""
    from common.io import load_nifti, save_nifti
    from common.physics import calibrate_count_scale, simulate_low_count_pet_fast, simulate_low_count_pet_sinogram

    _, o, act, affine = _load_input(input, output, "pet", allow_implausible=allow_implausible)
    if route == "fast":
        c = calibrate_count_scale(reference_suv, rel_noise_drf1, sigma_vox)
        low = simulate_low_count_pet_fast(act, drf, seed, c, sigma_vox)
    elif route == "sinogram":
        if not mu:
            raise SystemExit("--route sinogram needs --mu <attenuation map NIfTI in 1/mm>")
        mu_map, _ = load_nifti(mu, check_finite=True)
        if mu_map.shape != act.shape:
            raise InputDataError(mu, f"attenuation map shape {mu_map.shape} differs from activity {act.shape}")
        low = simulate_low_count_pet_sinogram(act, mu_map, float(_spacing(affine)[0]), drf, seed)
    else:
        raise SystemExit(f"unknown route {route!r}: fast or sinogram")
    save_nifti(low, affine, o)
    print(o)
    return str(o)


def simulate_thick(
    input: str,
    output: str,
    factor: int,
    thickness_mm: float | None = None,
    offset: int = 0,
    allow_implausible: bool = False,
) -> str:
    """Thick-slice CT: Gaussian slice profile along z (FWHM = ``thickness_mm``, default factor x spacing) then keep
    slices offset, offset+factor, ...; the output affine places each thick slice at its thin slice's position."""
    from common.io import save_nifti
    from common.physics import simulate_thick_slices, thick_slice_affine

    _, o, vol, affine = _load_input(input, output, "any", allow_implausible=allow_implausible)
    thick = simulate_thick_slices(vol, float(_spacing(affine)[2]), int(factor), thickness_mm, int(offset))
    save_nifti(thick, thick_slice_affine(affine, int(factor), int(offset)), o)
    print(o)
    return str(o)


def dicom2nifti(series: str, output: str, series_uid: str | None = None) -> str:
    """Convert a DICOM / Siemens IMA series folder to NIfTI: CT in HU, PET in body-weight SUV."""
    from common.io import read_dicom_series, read_pet_suv, save_nifti
    from common.io.monai_reader import SINGLE_DICOM_FILE

    src = Path(series).expanduser()
    if src.is_file():
        raise InputDataError(src, SINGLE_DICOM_FILE)
    vol = read_dicom_series(src, series_uid=series_uid)
    if vol.modality == "PT":
        vol = read_pet_suv(src, series_uid=series_uid)
    save_nifti(vol.array, vol.affine, Path(output).expanduser())
    print(f"{output} ({vol.modality}, {vol.units}, shape {vol.array.shape}, spacing {tuple(vol.spacing)} mm)")
    return str(output)


def _names(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """A command-line list: ``"a,b"`` (or the tuple / list fire makes of it) -> ``["a", "b"]``, empty items dropped."""
    return [v for v in (value.split(",") if isinstance(value, str) else value or []) if v]


def validate(bundle: str, overlays: str | list[str] | tuple[str, ...] = ()) -> bool:
    """Validate a bundle folder as CI does; prints the problems (exit status 1 when there are any).

    ``--overlays a.yaml,b.yaml``: config files read on top of train.yaml / inference.yaml for the workflow check
    (e.g. the bundle's ``configs/smoke.yaml`` and a ``data_cache_dir``: building the workflows generates the embedded
    default phantoms on first use otherwise)."""
    from restorezoo.bundle_check import validate_bundle

    problems = validate_bundle(bundle, overlays=_names(overlays))
    for p in problems:
        print(f"- {p}")
    if problems:
        raise SystemExit(1)
    print(f"{bundle}: valid")
    return True


def export(
    bundle: str,
    out: str = "dist",
    ckpt: str | None = None,
    zip: bool = True,
    overwrite: bool = False,
    onnx: bool = False,
    onnx_size: int = 64,
) -> str:
    """Export a trained bundle (weights ``ckpt``, default ``<bundle>/models/model.pt``, else the shipped
    ``pretrained/model.pt``) to ``<out>/<name>`` and
    ``<out>/<name>.zip``: model-zoo layout, TorchScript where the network scripts, the library vendored, so it runs
    with only the PyPI packages in its metadata.json (MONAI Label: ``--conf models <name>``). ``--onnx``: also
    ``models/model.onnx`` (fixed input size ``--onnx_size``; needs the ``onnx`` extra), checked with ONNX Runtime."""
    from restorezoo.export import export_bundle

    res = export_bundle(bundle, out, ckpt=ckpt, make_zip=zip, overwrite=overwrite, onnx=onnx, onnx_size=onnx_size)
    zip_text = f", {res.zip_path} ({res.zip_bytes / 1e6:.2f} MB)" if res.zip_path else ""
    ts = "model.pt + model.ts" if res.torchscript else "model.pt (network not scriptable: no model.ts)"
    if res.onnx_max_abs_diff is not None:
        ts += f" + model.onnx (ONNX Runtime vs PyTorch: max |diff| {res.onnx_max_abs_diff:.2e})"
    print(f"{res.folder} ({res.folder_bytes / 1e6:.2f} MB, {ts}){zip_text}")
    return str(res.folder)


def ship(bundle: str, ckpt: str, half: bool = False) -> str:
    """Make the weights ``ckpt`` the bundle's shipped ``pretrained/model.pt`` (the inference network's state dict,
    checked to load strictly; ``--half``: stored in float16) and record its sha256 in ``<bundle>/large_files.yml``.
    Inference uses it when the bundle has no trained ``models/model.pt``."""
    from restorezoo.pretrained import ship_weights

    res = ship_weights(bundle, ckpt, half=half)
    print(f"{res.path} ({res.size / 2**20:.2f} MiB, {res.dtype}, sha256 {res.sha256})")


def denoise(
    scan: str,
    out: str | None = None,
    bundle: str | None = None,
    drf: float | None = None,
    dose: float | None = None,
    factor: int | None = None,
    weights: str | None = None,
    bundles_dir: str | None = None,
    overwrite: bool = False,
    allow_implausible: bool = False,
) -> None:
    """Restore one scan with a bundle's shipped weights: ``SCAN`` is a NIfTI file (-> NIfTI) or a DICOM series
    folder (-> derived DICOM series). Bundle: ``--bundle``, else ``ct_throughplane_sr`` with ``--factor``,
    ``ct_lowdose_featkpn`` for CT, ``pet_lowdose_film_unet`` for PET (``--drf`` required). ``--weights``: another
    ``model.pt``; ``--out``: the output path (default ``<name>_<postfix>`` in the current folder)."""
    from restorezoo.denoise import denoise as run

    res = run(scan, out, bundle, drf, dose, factor, weights, bundles_dir, overwrite, True, allow_implausible)
    print(f"{res.output} ({res.bundle}, weights {res.weights}, {res.seconds:.1f} s)")


def benchmark(
    bundles: str | None = None,
    bundles_dir: str = "bundles",
    out: str = "benchmarks/results",
    train: bool = False,
    ckpt: str | None = None,
    config: str | None = None,
    overrides: dict | None = None,
    quick: bool = False,
    speed: bool = True,
    speed_shape: tuple | None = None,
    threads: int = 2,
    readme: str | None = None,
    render_only: bool = False,
    measure_bm4d: bool = False,
    baselines: str | None = None,
    runs: str | None = None,
    merge_into: str | None = None,
    replace_baselines: str | None = None,
) -> str:
    """Benchmark every bundle of ``--bundles_dir`` (default ``./bundles``; or ``--bundles a,b``) against its input
    and classical baselines per dose, with speed and memory (see restorezoo/benchmark.py). ``--ckpt name=path,...``
    gives weights (default: each bundle's models/model.pt; ``--train`` trains missing ones with the default config);
    ``--config a.yaml,b.yaml`` adds config overlays to every run; ``--readme README.md`` rewrites its benchmark
    section; ``--render_only`` re-writes the tables (and README section) from the CSV files of an earlier run in
    ``--out`` (``--measure_bm4d``: also time BM4D, when the optional extra is installed, for the speed target);
    ``--baselines gaussian,tv`` runs only those baselines (default: every one a task lists and is installed);
    ``--runs shipped`` only those runs of each bundle's benchmark.yaml (default: all; ``shipped`` measures the weights
    shipped in the bundles without training or needing the defaults); ``--merge_into benchmarks/results``: merge
    this run's rows into an earlier, complete run's folder (the runs measured now replace theirs; restorezoo/
    benchmark.py ``merge``) and render that folder (and ``--readme``) instead; ``--replace_baselines bm3d``: with
    ``--merge_into``, this run's rows of those baselines replace the earlier ones (a deliberate re-measurement)."""
    import shlex
    import sys

    from restorezoo.benchmark import merge, render, run_benchmark

    if render_only:
        md = render(out, readme, measure_bm4d, bundles_dir=bundles_dir)
        print(md.read_text())
        return str(md)
    # paths as the user typed them, relative to this folder: the runs work in their own folders
    ckpts = {k: str(Path(v).resolve()) for k, v in (item.split("=", 1) for item in ckpt.split(","))} if ckpt else {}
    names = _names(bundles)
    md = run_benchmark(
        bundles=names or None,
        bundles_dir=bundles_dir,
        out=out,
        train=train,
        ckpts=ckpts,
        extra_configs=[str(Path(c).resolve()) for c in config.split(",")] if config else (),
        overrides=overrides,
        quick=quick,
        speed=speed,
        speed_shape=speed_shape,
        threads=threads,
        readme=None if merge_into else readme,
        command="restorezoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        baselines=_names(baselines) or None,
        runs=_names(runs) or None,
    )
    if merge_into:
        md = merge(out, merge_into, bundles_dir, readme, _names(replace_baselines))
    print(md.read_text())
    return str(md)


def speed(
    bundle: str,
    threads: int = 2,
    repeats: int = 2,
    roi: int = 64,
    overlap: float = 0.5,
    bundle_inferer: bool = False,
    input_shape: tuple | None = None,
    overrides: dict | None = None,
) -> None:
    """Inference speed and peak memory of a bundle folder's network next to the MONAI UNet reference, measured in the
    same run, each model in a fresh process (see restorezoo/speed.py). Without ``--bundle_inferer`` both networks run
    through the same plain Gaussian sliding window (``--roi``, ``--overlap``): network against network. With it the
    bundle runs its own ``inference.yaml`` inferer (ROI, blending, ensembles, output scale) and the reference keeps
    ROI 64, overlap 0.5. ``--input_shape X,Y,Z`` is the bundle's input (thick slices for super-resolution:
    24 x 4 = 96 output slices); voxels/s counts OUTPUT voxels; the reference processes a 128 x 128 x 96 volume.
    ``--overrides '{"tta_flips": [[], [0]]}'`` changes config ids of the bundle's inference.yaml for the measurement
    (its network's always; its inferer's only with ``--bundle_inferer``, which uses that inferer)."""
    from pathlib import Path

    from restorezoo.speed import SHAPE, speed_rows

    shape = tuple(int(v) for v in input_shape) if input_shape else SHAPE
    window = None if bundle_inferer else {"roi": roi, "overlap": overlap}
    rows = speed_rows(Path(bundle), threads, repeats, shape, overrides, window=window)
    how = "the bundle's inference.yaml inferer" if bundle_inferer else f"ROI {roi}^3, overlap {overlap}"
    lines = [
        f"reference volume {SHAPE}; bundle input {shape}; {how}; {threads} threads",
        "| model | params (M) | input | output | s / volume | output voxels/s | x reference | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape_in, shape_out = "x".join(map(str, r["input_shape"])), "x".join(map(str, r["output_shape"]))
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} | {shape_in} | {shape_out} | {r['seconds_per_volume']:.2f} | "
            f"{r['voxels_per_s']:.3g} | {r['x_reference']:.2f} | {r['peak_rss_MB']:.0f} |"
        )
    print("\n".join(lines))


def main() -> None:
    """The ``restorezoo`` console command. A :class:`common.errors.UserError` (bad input, unwritable output) ends it
    with one line ``error: <file>: <problem>`` and exit status 1 (``RESTOREZOO_TRACEBACK=1``: the traceback)."""
    import fire

    from common.errors import UserError, report, traceback_requested

    try:
        _fire(fire)
    except UserError as exc:
        if traceback_requested():
            raise
        report(exc)
        raise SystemExit(1) from None


def _fire(fire) -> None:
    fire.Fire(
        {
            "data": data,
            "simulate-ct": simulate_ct,
            "simulate-pet": simulate_pet,
            "simulate-thick": simulate_thick,
            "dicom2nifti": dicom2nifti,
            "validate": validate,
            "export": export,
            "ship": ship,
            "denoise": denoise,
            "benchmark": benchmark,
            "speed": speed,
        },
        name="restorezoo",
    )


if __name__ == "__main__":
    main()
