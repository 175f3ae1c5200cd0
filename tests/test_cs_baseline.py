"""The L1-wavelet CS baseline (`mribundles.baselines.cs`) on the REAL in-vivo 16-coil brain
shipped as a test scan (`sample_data/pulseq_invivo_brain_16ch_ksp.npy`: scored here, never tuned
on), and its oracle in `evaluate_recon`.

PSNR is fastMRI's (whole image, maxval = the reference's maximum), against the RSS of the fully
sampled k-space; masks as `evaluate_recon` draws them by default (centre fraction 0.32 / R,
seed 0; 1D masks choose phase-encode columns, the last axis of this file).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_checks import shrunk_varnet_bundle
from mribundles import sample_data
from mribundles.baselines.cs import (
    ORACLE_FACTORS,
    TUNED_LAMDAS,
    espirit_maps,
    l1_wavelet_recon,
    mask_setting,
    tuned_lamda,
)
from mribundles.errors import InvalidInputError
from mribundles.evaluation import evaluate_recon
from mribundles.metrics import psnr
from mribundles.physics import ifft2c, make_mask, rss

INVIVO = "pulseq_invivo_brain_16ch_ksp.npy"
CS_ITERS = 30  # enough for the margins asserted here (measured: see each test)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def invivo() -> torch.Tensor:
    """The real brain: complex64 (coil, readout, phase-encode) = (16, 128, 128), fully sampled."""
    return torch.from_numpy(np.load(sample_data.path(INVIVO)))


def _mask(kind: str, acceleration: float, shape) -> torch.Tensor:
    return make_mask(kind, shape, acceleration, 0.32 / acceleration, 0)


def test_tuned_cs_beats_zero_filling_on_the_real_brain_at_1d_4x(invivo):
    mask = _mask("random1d", 4, invivo.shape[-2:])
    target = rss(ifft2c(invivo))
    zero_filled = psnr(target, rss(ifft2c(invivo * mask)))
    cs = psnr(target, l1_wavelet_recon(invivo * mask, mask, max_iter=CS_ITERS))
    # measured: zero-filled 21.44 dB, tuned CS 27.66 dB at 30 iterations (26.92 at 100); the old
    # low-resolution maps gave 15.67 dB
    assert zero_filled == pytest.approx(21.435, abs=0.01)
    assert cs > zero_filled + 3.0


def test_espirit_maps_have_unit_rss_and_the_setting_picks_the_tuned_lamda(invivo):
    mask = _mask("random1d", 4, invivo.shape[-2:])
    maps = espirit_maps(invivo * mask / invivo.abs().max(), mask)
    assert maps.shape == invivo.shape and maps.dtype == torch.complex64
    # no eigenvalue crop: every pixel, the noisy background included, keeps unit-norm maps
    torch.testing.assert_close(rss(maps), torch.ones(invivo.shape[-2:]), rtol=0, atol=1e-4)

    assert mask_setting(mask)[0] == "1d" and mask_setting(mask)[1] == pytest.approx(128 / int(mask[0].sum()))
    assert mask_setting(_mask("poisson2d", 8, invivo.shape[-2:]))[0] == "2d"
    assert tuned_lamda("random1d", 4) == TUNED_LAMDAS[("1d", 4.0)]
    assert tuned_lamda("equispaced1d", 5) == TUNED_LAMDAS[("1d", 4.0)]  # nearest in log R
    assert tuned_lamda("1d", 12) == TUNED_LAMDAS[("1d", 8.0)]
    assert tuned_lamda("gaussian2d", 6) == TUNED_LAMDAS[("2d", 8.0)]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The VarNet bundle's configs with a tiny untrained network (evaluate_recon needs a bundle;
    only the baselines are under test here)."""
    return shrunk_varnet_bundle(tmp_path_factory.mktemp("bundle") / "brain_mri_recon_varnet", num_cascades=1, chans=2, sens_chans=2)


def test_oracle_lamda_comes_from_its_grid_and_scores_at_least_the_tuned_cs(bundle):
    result = evaluate_recon(bundle, sample_data.path(INVIVO), mask="random1d", acceleration=4, cs_iters=CS_ITERS,
                            cs_oracle=True)
    settings, methods = result["settings"], result["methods"]
    assert settings["cs_lamda"] == TUNED_LAMDAS[("1d", 4.0)]
    assert settings["cs_oracle_grid"] == pytest.approx([settings["cs_lamda"] * f for f in ORACLE_FACTORS])
    names = list(methods)
    assert names[:3] == ["brain_mri_recon_varnet", "zero-filled", "l1-wavelet"] and len(names) == 4
    match = re.fullmatch(r"l1-wavelet \(oracle lambda=(.+)\)", names[3])
    assert match, names[3]
    assert any(float(match.group(1)) == pytest.approx(lam, rel=1e-2) for lam in settings["cs_oracle_grid"])
    # the tuned lamda is in the grid, so the oracle can only match or beat it
    assert methods[names[3]]["psnr"] >= methods["l1-wavelet"]["psnr"] - 1e-9
    assert methods["l1-wavelet"]["psnr"] > methods["zero-filled"]["psnr"] + 3.0


def test_cli_table_labels_the_oracle(bundle, capsys):
    from mribundles.cli import main

    assert main(["evaluate-recon", "--bundle", str(bundle), "--kspace", sample_data.path(INVIVO), "--mask", "poisson2d",
                 "--acceleration", "8", "--cs-iters", "5", "--cs-oracle"]) == 0
    rows = capsys.readouterr().out.splitlines()[4:]
    assert [row.split()[0] for row in rows[:3]] == ["brain_mri_recon_varnet", "zero-filled", "l1-wavelet"]
    assert len(rows) == 4 and re.match(r"l1-wavelet \(oracle lambda=[0-9.e-]+\) +[0-9.]+ +[0-9.]+", rows[3]), rows


def test_oracle_needs_the_baselines(bundle):
    with pytest.raises(ValueError, match="baselines"):
        evaluate_recon(bundle, sample_data.path(INVIVO), baselines=False, cs_oracle=True)


def test_bad_input_raises_invalid_input_error(invivo):
    mask = _mask("random1d", 4, invivo.shape[-2:])
    with pytest.raises(InvalidInputError, match="complex"):
        l1_wavelet_recon(invivo.abs(), mask)
    with pytest.raises(InvalidInputError, match="mask"):
        l1_wavelet_recon(invivo, mask[:64])
    with pytest.raises(InvalidInputError, match="mask"):
        l1_wavelet_recon(invivo, mask.float(), lamda=1e-3)
    with pytest.raises(InvalidInputError, match="no signal"):
        l1_wavelet_recon(torch.zeros_like(invivo), mask)
    no_centre = mask.clone()
    no_centre[:, 60:68] = False
    with pytest.raises(InvalidInputError, match="fully sampled centre"):
        l1_wavelet_recon(invivo, no_centre)
    narrow = torch.zeros_like(mask)
    narrow[:, ::4] = True
    narrow[:, 63:65] = True  # a 2-wide centre: too narrow for ESPIRiT
    with pytest.raises(InvalidInputError, match="ESPIRiT needs at least 3x3"):
        espirit_maps(invivo * narrow, narrow)
    # CS itself falls back to the low-resolution maps there (1D 8x on a 64-line scan).
    image = l1_wavelet_recon(invivo, narrow, max_iter=5)
    assert image.shape == invivo.shape[-2:] and bool(torch.isfinite(image).all()) and float(image.max()) > 0
