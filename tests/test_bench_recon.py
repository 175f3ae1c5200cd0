"""The reconstruction benchmark's settings and the targets it checks (no model is run)."""

import importlib.util
from pathlib import Path

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
