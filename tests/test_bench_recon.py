"""The reconstruction benchmark's settings and the targets it checks (no model is run but the one
adaptation that is refused before it starts)."""

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

from mribundles.errors import InvalidInputError
from mribundles.networks.recurrent_varnet import HiddenStateInitialiser
from mribundles.physics import fft2c, ifft2c

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_recon.py"
spec = importlib.util.spec_from_file_location("bench_recon", SCRIPT)
bench_recon = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_recon)


def _metrics(psnr: float, seconds: float) -> dict:
    return {"nmse": 0.0, "psnr": psnr, "ssim": 0.0, "seconds_per_slice": seconds}


def test_each_setting_carries_its_targets():
    runs = {(r["data"], r["sampling"]): r for r in bench_recon.settings(["simulated", "phantom"], None)}
    assert runs["simulated", "radial 64 spokes"]["targets"] == {"min_gain_db": 4.0, "beats_cs": False}
    assert runs["simulated", "radial 32 spokes"]["targets"] == {"min_gain_db": 0.0, "beats_cs": False}
    assert runs["simulated", "1D random 4x"]["targets"] == {"min_gain_db": 0.0, "beats_cs": True}
    assert runs["phantom", "2D Poisson 8x"]["targets"] == {"min_gain_db": 0.0, "beats_cs": False}
    # no raw radial k-space exists for the phantom, and radial bundles only get radial settings
    assert ("phantom", "radial 64 spokes") not in runs
    assert runs["simulated", "radial 32 spokes"]["bundles"] == bench_recon.RADIAL_BUNDLES


def test_target_checks_read_the_setting_not_its_name():
    radial = {"data": "simulated", "sampling": "radial 64 spokes", "targets": {"min_gain_db": 4.0, "beats_cs": False}}
    cartesian = {"data": "simulated", "sampling": "1D random 4x", "targets": {"min_gain_db": 0.0, "beats_cs": True}}
    lines = bench_recon.target_checks([
        (radial, {"gridding": _metrics(22.0, 0.01), "net": _metrics(25.5, 0.4), "l1-wavelet": _metrics(25.0, 9.0)}),
        (cartesian, {"zero-filled": _metrics(24.0, 0.01), "net": _metrics(28.0, 2.0), "l1-wavelet": _metrics(29.0, 1.9)}),
    ])
    assert lines == [
        "NOT met: beats gridding in PSNR by at least 4 dB (net, simulated, radial 64 spokes: +3.50 dB)",
        "met: faster than l1-wavelet (net, simulated, radial 64 spokes: 0.400 s against 9.000 s per slice)",
        "met: beats zero-filled in PSNR (net, simulated, 1D random 4x: +4.00 dB)",
        "NOT met: beats l1-wavelet in PSNR (net, simulated, 1D random 4x: -1.00 dB)",
        "NOT met: faster than l1-wavelet (net, simulated, 1D random 4x: 2.000 s against 1.900 s per slice)",
    ]


def test_speed_size_options_map_to_the_chosen_models_network_def():
    config = bench_recon.SPEED_MODELS["rvn"]["config"]
    options = dict.fromkeys(bench_recon.SIZE_OPTIONS)
    assert bench_recon.size_overrides("rvn", {**options, "steps": 4, "sens_chans": 2}, config) == {"num_steps": 4, "sens_chans": 2}
    assert bench_recon.size_overrides("varnet", {**options, "cascades": 12, "chans": 18}, config) == {"num_cascades": 12, "chans": 18}
    assert bench_recon.size_overrides("rvn", options, config) == {}
    # a size of the other model is refused, not silently ignored
    with pytest.raises(InvalidInputError, match=r"inference\.json: --cascades is no size of --model rvn \(its sizes: --steps, "):
        bench_recon.size_overrides("rvn", {**options, "cascades": 3}, config)
    with pytest.raises(InvalidInputError, match="--hidden-chans is no size of --model varnet"):
        bench_recon.size_overrides("varnet", {**options, "hidden_chans": 8}, config)


def test_speed_arguments_keep_the_varnet_command_and_add_rvn():
    parser = argparse.ArgumentParser()
    bench_recon.speed_arguments(parser)
    old = parser.parse_args(["--cascades", "12", "--chans", "18", "--sens-chans", "8"])
    assert (old.model, old.cascades, old.chans, old.sens_chans, old.steps, old.config) == ("varnet", 12, 18, 8, None, None)
    new = parser.parse_args(["--model", "rvn", "--steps", "4", "--hidden-chans", "8", "--num-layers", "2"])
    assert (new.model, new.steps, new.hidden_chans, new.num_layers, new.cascades) == ("rvn", 4, 8, 2, None)


def test_direct_gets_our_rvn_sizes_and_initialiser_dilations():
    kwargs = bench_recon.direct_rvn_kwargs({"num_steps": 8, "hidden_chans": 16, "num_layers": 3, "sens_chans": 4, "sens_pools": 4})
    assert kwargs == {
        "num_steps": 8, "recurrent_hidden_channels": 16, "recurrent_num_layers": 3, "no_parameter_sharing": True,
        "learned_initializer": True, "initializer_initialization": "sense", "initializer_channels": (16, 16, 16),
        "initializer_dilations": (1, 2, 4), "initializer_multiscale": 1, "normalized": False,
    }
    # the dilations handed to DIRECT are those our initialiser is built with
    ours = HiddenStateInitialiser(16, 3)
    assert tuple(m.dilation[0] for m in ours.context if isinstance(m, torch.nn.Conv2d)) == bench_recon.RVN_INITIALISER_DILATIONS


def test_direct_operators_given_to_its_rvn_are_our_centred_orthonormal_ffts():
    transforms = pytest.importorskip("direct.data.transforms")  # the `bench` extra; CI does not install it
    data = torch.randn(1, 3, 8, 6, dtype=torch.complex64)  # (B, coil, ky, kx)
    as_direct = torch.view_as_real(data)
    ours = {"ifft2": ifft2c(data), "fft2": fft2c(data)}
    for name, expected in ours.items():
        theirs = getattr(transforms, name)(as_direct, dim=(2, 3), centered=True, normalized=True)
        torch.testing.assert_close(torch.view_as_complex(theirs), expected)


def test_real_data_checks_score_inside_the_head_against_the_oracle():
    def row(psnr_head: float, seconds: float = 1.0) -> dict:
        return {**_metrics(psnr_head - 2, seconds), "psnr_head": psnr_head}

    run = {"data": "invivo", "sampling": "1D random 4x", "real": True, "targets": {"min_gain_db": 0.0, "beats_cs": False}}
    methods = {"zero-filled": row(22.0), "net": row(24.0), "net + zero-shot SSDU": row(27.5, 120.0),
               "l1-wavelet": row(26.0), "l1-wavelet (oracle lambda=0.001)": row(27.0)}
    assert bench_recon.real_data_checks([(run, methods)]) == [
        "met: adaptation does not lower its bundle inside the head (net + zero-shot SSDU, invivo, 1D random 4x: +3.50 dB)",
        "met: adaptation lifts its bundle by at least 3 dB inside the head (net + zero-shot SSDU, invivo, 1D random 4x: +3.50 dB)",
        "met: adaptation takes less than 300 s (net + zero-shot SSDU, invivo, 1D random 4x: 120 s)",
        "met: the best bundle beats zero-filled by at least 3 dB inside the head (net + zero-shot SSDU, invivo, 1D random 4x: +5.50 dB)",
        "NOT met: the best bundle beats oracle CS by at least 1 dB inside the head (net + zero-shot SSDU, invivo, 1D random 4x: +0.50 dB)",
    ]
    # Simulated settings have no real-data targets; the oracle is no bundle in the general checks.
    lines = bench_recon.target_checks([(run, methods)])
    assert not any("oracle lambda" in line.split("(")[1] for line in lines if line.startswith(("met: beats", "NOT met: beats")))


def test_an_adaptation_that_cannot_split_the_mask_is_a_refusal_line_not_a_crash(tmp_path):
    """A 1D 8x mask of a 32x32 scan is all calibration centre, with no line to hold out:
    the bundle gets no adapted row, and one line says which bundle, setting and why."""
    import numpy as np

    from recon_bench.scoring import adapted_rows

    kspace = fft2c(torch.randn(4, 32, 32, dtype=torch.complex64))
    file = tmp_path / "tiny.npy"
    np.save(file, kspace.numpy())
    setting = {"data": "tiny", "sampling": "1D random 8x", "bundles": ["brain_mri_recon_rvn"],
               "kwargs": {"mask": "random1d", "acceleration": 8}}
    methods, images, refused = adapted_rows(setting, file, torch.ones(1, 32, 32), seed=0)
    assert methods == {} and images == {}
    assert refused == ["adaptation refused (brain_mri_recon_rvn, tiny, 1D random 8x): too few sampled lines outside the "
                       "calibration centre to split (0; a split of 10% needs at least 2)"]
