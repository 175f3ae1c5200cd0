"""Self-supervised (SSDU) adaptation: the mask split, the k-space loss, the networks' k-space,
the adaptation loop's guarantee, the bundle overlay end to end on a tiny scan simulated from a
real T1 slice, and the inputs and networks it refuses (magnitude-only networks)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_checks import workflow

from mribundles.adaptation import (
    ADAPTED_WEIGHTS,
    ADDENDUM,
    BundleAdaptation,
    UnrolledKspaceModel,
    UnsplittableMaskError,
    adapt,
    draw_subset,
    kspace_model,
    split_unit,
    ssdu_loss,
    ssdu_split,
)
from mribundles.bundles import file_sha256, read_metadata
from mribundles.errors import InvalidInputError
from mribundles.metrics import head_mask, masked_psnr, psnr
from mribundles.networks import ImageUnet, RecurrentVarNet, VarNet
from mribundles.physics import calibration_mask, make_mask, rss, simulate_multicoil_kspace
from mribundles.physics.fft import ifft2c
from mribundles.sample_data import path as sample_path

REPO = Path(__file__).resolve().parents[1]
RVN = REPO / "bundles" / "brain_mri_recon_rvn"
UNET = REPO / "bundles" / "brain_mri_recon_unet"
# kspace_model's refusal of a network without forward_kspace, after its class name.
MAGNITUDE_REFUSAL = (" returns only a magnitude image, whose k-space cannot be formed faithfully from estimated coil maps "
                     "(on real scans the fully sampled image scores worse than zero-filling on held-out samples)")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def _slice_kspace(num_coils: int = 4, index: int = 1) -> torch.Tensor:
    """Fully sampled complex (coil, 80, 112) k-space simulated from a real T1 slice."""
    image = torch.from_numpy(np.load(sample_path("voxelmorph_t1_axial_4slices_80x112.npy"))[index])
    return simulate_multicoil_kspace(image, num_coils, 30.0, index)[0]


def _write_undersampled(path: Path, num_coils: int = 4, kind: str = "random1d") -> Path:
    kspace = _slice_kspace(num_coils)
    mask = make_mask(kind, kspace.shape[-2:], 4, 0.08, 0)
    np.save(path, (kspace * mask).numpy())
    return path


# --- the split -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random1d", "poisson2d"])
def test_split_is_disjoint_covering_seeded_and_keeps_the_centre(kind):
    mask = make_mask(kind, (80, 112), 4, 0.08, 0)
    split = ssdu_split(mask, 0.4, 0.1, seed=3, step=1)
    parts = [split.input, split.loss, split.holdout]
    assert all(p.dtype == torch.bool and p.shape == mask.shape for p in parts)
    assert torch.equal(split.input | split.loss | split.holdout, mask)
    assert int(sum(p.long() for p in parts).max()) == 1  # disjoint
    centre = calibration_mask(mask) & mask
    assert int(centre.sum()) > 0 and bool((split.input | ~centre).all())
    assert bool(split.loss.any()) and bool(split.holdout.any())

    again = ssdu_split(mask, 0.4, 0.1, seed=3, step=1)
    assert all(torch.equal(a, b) for a, b in zip(parts, [again.input, again.loss, again.holdout]))
    later = ssdu_split(mask, 0.4, 0.1, seed=3, step=2)
    assert torch.equal(later.holdout, split.holdout)  # fixed for the run
    assert not torch.equal(later.loss, split.loss)  # a new split each step
    other = ssdu_split(mask, 0.4, 0.1, seed=4, step=1)
    assert not torch.equal(other.holdout, split.holdout)

    # Share of the units outside the centre: 10 % held out, 40 % of the rest to the loss.
    if kind == "random1d":
        assert split_unit(mask) == "line"
        n = int((mask.any(0) & ~centre.any(0)).sum())
        lines = lambda m: int(m.any(0).sum())  # noqa: E731
        assert lines(split.holdout) == max(1, round(0.1 * n))
        assert lines(split.loss) == round(0.4 * (n - lines(split.holdout)))
        for part in parts:  # whole phase-encode lines: still a column mask
            assert bool((part == part.any(0)).all())
    else:
        assert split_unit(mask) == "point"
        n = int((mask & ~centre).sum())
        assert int(split.holdout.sum()) == round(0.1 * n)


def test_point_split_of_a_line_mask_holds_out_whole_lines():
    mask = make_mask("random1d", (80, 112), 4, 0.08, 0)
    lines, points = ssdu_split(mask, 0.4, 0.1, seed=3, step=1), ssdu_split(mask, 0.4, 0.1, seed=3, step=1, unit="point")
    assert torch.equal(points.holdout, lines.holdout)  # the acquisition's unit, whatever the split's
    assert torch.equal(points.input | points.loss | points.holdout, mask)
    assert not bool((points.loss == points.loss.any(0)).all())  # points, not whole lines
    assert bool(((points.input | points.loss) == (points.input | points.loss).any(0)).all())


def test_split_refuses_a_mask_with_too_few_samples():
    mask = make_mask("random1d", (80, 112), 4, 0.08, 0)
    centre = calibration_mask(mask) & mask
    few = centre.clone()
    few[:, int(torch.nonzero(~centre.any(0))[0])] = True  # the centre and one line
    with pytest.raises(UnsplittableMaskError, match="too few sampled lines"):
        ssdu_split(few, 0.4, 0.1)
    with pytest.raises(ValueError, match="fraction"):
        draw_subset(mask, 1.5, 0)


# --- the loss and the networks' k-space ------------------------------------------------------

def test_loss_is_zero_for_a_perfect_prediction_and_normalised():
    kspace = _slice_kspace()[None]
    mask = make_mask("random1d", kspace.shape[-2:], 4, 0.08, 0)
    assert float(ssdu_loss(kspace.clone(), kspace, mask)) == 0.0
    # Zero prediction: each normalised term is exactly 1.
    assert float(ssdu_loss(torch.zeros_like(kspace), kspace, mask)) == pytest.approx(2.0)
    # Scale-free, and only the masked samples count.
    noise = torch.randn(kspace.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    noisy = kspace + 0.1 * kspace.abs().mean() * noise
    loss = float(ssdu_loss(noisy, kspace, mask))
    assert 0 < loss < 2
    assert float(ssdu_loss(7 * noisy, 7 * kspace, mask)) == pytest.approx(loss, rel=1e-5)
    assert float(ssdu_loss(torch.where(mask, noisy, 0), kspace, mask)) == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize("cls", [RecurrentVarNet, VarNet])
def test_forward_kspace_is_the_kspace_behind_forward_and_scripts(cls):
    torch.manual_seed(0)
    kwargs = {RecurrentVarNet: dict(num_steps=2, hidden_chans=4, num_layers=2, sens_chans=2, sens_pools=2),
              VarNet: dict(num_cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2)}[cls]
    net = cls(**kwargs).eval()
    kspace = _slice_kspace()[None] * 1e-3  # a raw scale, far from 1
    mask = make_mask("random1d", kspace.shape[-2:], 4, 0.08, 0)[None]
    with torch.no_grad():
        image, full = net(kspace * mask, mask), net.forward_kspace(kspace * mask, mask)
        torch.testing.assert_close(rss(ifft2c(full)).unsqueeze(1), image, rtol=1e-5, atol=1e-6 * float(image.max()))
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted.forward_kspace(kspace * mask, mask), full, rtol=1e-4, atol=1e-6 * float(full.abs().max()))
    assert isinstance(kspace_model(net), UnrolledKspaceModel)


def test_a_magnitude_network_is_refused_with_the_reason():
    """A network without forward_kspace returns only a magnitude, whose k-space from estimated coil
    maps is not faithful on real scans: refused in one line that says what and why."""
    torch.manual_seed(0)
    net = ImageUnet(chans=4, num_pools=2)
    expected = "SSDU adaptation needs the network's multi-coil k-space; ImageUnet" + MAGNITUDE_REFUSAL
    for network_input in ("kspace", "zero_filled"):
        with pytest.raises(InvalidInputError) as caught:
            kspace_model(net, network_input)
        assert str(caught.value) == expected and caught.value.path is None

    class Magnitude(torch.nn.Module):  # any module without forward_kspace, named by its class
        def forward(self, kspace, mask):
            return rss(ifft2c(kspace)).unsqueeze(1)

    with pytest.raises(InvalidInputError, match=r"; Magnitude returns only a magnitude image,"):
        kspace_model(Magnitude())
    # A k-space network fed anything but k-space is refused too.
    with pytest.raises(InvalidInputError, match=r"^SSDU adaptation feeds RecurrentVarNet k-space, but the bundle feeds it 'zero_filled'$"):
        kspace_model(_tiny_rvn(), "zero_filled")


# --- the loop --------------------------------------------------------------------------------

def _tiny_rvn() -> RecurrentVarNet:
    torch.manual_seed(0)
    return RecurrentVarNet(num_steps=2, hidden_chans=4, num_layers=2, sens_chans=2, sens_pools=2)


def _tiny_item() -> dict:
    kspace = _slice_kspace()
    mask = make_mask("random1d", kspace.shape[-2:], 4, 0.08, 0)
    return {"kspace": kspace * mask, "mask": mask}


def test_adapt_lowers_the_held_out_loss_and_never_returns_worse_weights():
    net = _tiny_rvn()
    result = adapt(net, [_tiny_item()], steps=6, lr=3e-3, val_every=2, patience=10, min_improvement=0.0, progress=False)
    assert result.history[0] == (0, result.start_loss) and len(result.history) == 4
    assert result.best_loss == min(loss for _, loss in result.history) < result.start_loss
    assert result.best_step > 0 and not net.training

    # A learning rate that wrecks the network: the start's weights come back unchanged.
    net = _tiny_rvn()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    result = adapt(net, [_tiny_item()], steps=4, lr=50.0, val_every=1, patience=2, progress=False)
    assert result.best_step == 0 and result.best_loss == result.start_loss
    assert result.stopped_early and result.steps_run == 2
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())


def test_a_fall_of_the_held_out_loss_below_the_margin_keeps_the_starting_weights():
    """The same run twice: kept with no margin; with a margin just above the fall it reached,
    the starting weights come back and the history still shows the fall."""
    free = adapt(_tiny_rvn(), [_tiny_item()], steps=6, lr=3e-3, val_every=2, patience=10, min_improvement=0.0, progress=False)
    fall = 1 - free.best_loss / free.start_loss
    assert free.best_step > 0 and 0 < fall < 0.98

    net = _tiny_rvn()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    kept = adapt(net, [_tiny_item()], steps=6, lr=3e-3, val_every=2, patience=10, min_improvement=fall + 0.01, progress=False)
    assert kept.best_step == 0 and kept.best_loss == kept.start_loss == pytest.approx(free.start_loss)
    assert min(loss for _, loss in kept.history) == pytest.approx(free.best_loss, rel=1e-4)
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items()) and not net.training
    with pytest.raises(ValueError, match=r"min_improvement must be in \[0, 1\), got 1.0"):
        adapt(_tiny_rvn(), [_tiny_item()], steps=1, min_improvement=1.0, progress=False)


def test_frozen_submodules_keep_their_weights_and_the_rest_adapts():
    net = _tiny_rvn()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    result = adapt(net, [_tiny_item()], steps=4, lr=3e-3, val_every=2, patience=10, frozen=["sens_net"], min_improvement=0.0,
                   progress=False)
    assert result.best_step > 0
    changed = {k for k, v in net.state_dict().items() if not torch.equal(start[k], v)}
    assert changed and not any(k.startswith("sens_net.") for k in changed)
    with pytest.raises(ValueError, match=r"cannot freeze \['sens_nte'\]: RecurrentVarNet has no such submodule"):
        adapt(_tiny_rvn(), [_tiny_item()], steps=1, frozen=["sens_nte"], progress=False)


def test_adapt_refuses_a_magnitude_network_and_leaves_its_weights():
    torch.manual_seed(0)
    net = ImageUnet(chans=4, num_pools=2)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InvalidInputError, match=re.escape("; ImageUnet" + MAGNITUDE_REFUSAL) + "$"):
        adapt(net, [_tiny_item()], steps=2, lr=1e-3, val_every=1, patience=5, network_input="zero_filled", progress=False)
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())


# --- the bundle overlay ----------------------------------------------------------------------

def _adapt_overlay(kspace_file: Path, output_dir: Path, **override):
    settings = {"adapt_steps": 4, "adapt_val_every": 2, "device": "$torch.device('cpu')"}
    return workflow(RVN, ["inference.json", "adapt.json"], "infer", kspace_file=str(kspace_file),
                    output_dir=str(output_dir), **{**settings, **override})


def test_rvn_adapts_through_the_overlay_and_inference_runs_the_adapted_weights(tmp_path):
    scan = _write_undersampled(tmp_path / "site_scan.npy")
    out = tmp_path / "out"
    wf = _adapt_overlay(scan, out)
    report = wf.parser.get_parsed_content("adaptation").run()

    weights, addendum = out / "adapted" / ADAPTED_WEIGHTS, out / "adapted" / ADDENDUM
    assert report["weights"] == weights and weights.is_file() and addendum.is_file()
    text = addendum.read_text()
    assert file_sha256(weights) == report["sha256"] and f"`{report['sha256']}`" in text
    version = read_metadata(RVN)["version"]
    assert f"brain_mri_recon_rvn {version}" in text and str(scan) in text
    before, after = map(float, re.search(r"loss \(normalised l1 \+ l2\): ([\d.]+) before, ([\d.]+) after", text).groups())
    result = report["result"]
    assert after == pytest.approx(result.best_loss, abs=1e-4) and after <= before
    state = torch.load(weights, map_location="cpu", weights_only=True)
    shipped = torch.load(RVN / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state.keys() == shipped.keys()  # the same state-dict format as models/model.pt
    assert (result.best_step == 0) == all(torch.equal(state[k], shipped[k]) for k in state)

    infer = workflow(RVN, ["inference.json"], "infer", kspace_file=str(scan), output_dir=str(tmp_path / "recon"),
                     ckpt_path=str(weights), device="$torch.device('cpu')")
    infer.run()
    infer.finalize()
    assert (tmp_path / "recon" / "site_scan_recon.nii.gz").is_file()


def test_the_varnet_bundle_adapts_through_its_overlay(tmp_path):
    """The other unrolled bundle: one step from its shipped weights, weights written in its
    models/ format."""
    bundle = REPO / "bundles" / "brain_mri_recon_varnet"
    scan = _write_undersampled(tmp_path / "scan.npy")
    wf = workflow(bundle, ["inference.json", "adapt.json"], "infer", kspace_file=str(scan), output_dir=str(tmp_path / "out"),
                  adapt_steps=1, adapt_val_every=1, device="$torch.device('cpu')")
    report = wf.parser.get_parsed_content("adaptation").run()
    assert report["result"].best_loss <= report["result"].start_loss
    state = torch.load(report["weights"], map_location="cpu", weights_only=True)
    shipped = wf.parser.get_parsed_content("ckpt_path")
    assert state.keys() == torch.load(shipped, map_location="cpu", weights_only=True).keys()


def test_only_the_unrolled_bundles_ship_an_overlay():
    """The magnitude-only bundles (U-Net, ReconResNet) offer no adaptation."""
    overlays = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("brain_mri_recon_*/configs/adapt.json"))
    assert overlays == ["brain_mri_recon_rvn", "brain_mri_recon_varnet"]


def test_bundle_adaptation_refuses_a_magnitude_network_before_reading_any_scan(tmp_path):
    """BundleAdaptation (what an adapt.json runs) with a magnitude network: one line naming the
    bundle, before the scans (here none exist) or the weights are read, and nothing written."""
    torch.manual_seed(0)
    out = tmp_path / "adapted"
    adaptation = BundleAdaptation(UNET, ImageUnet(chans=4, num_pools=2), tmp_path / "no_weights.pt",
                                  [{"kspace": str(tmp_path / "no_scan.npy")}], lambda item: item, "none", str(out),
                                  network_input="zero_filled", progress=False)
    with pytest.raises(InvalidInputError) as caught:
        adaptation.run()
    assert str(caught.value) == f"{UNET}: SSDU adaptation needs the network's multi-coil k-space; ImageUnet" + MAGNITUDE_REFUSAL
    assert not out.exists()


def test_overlay_runs_from_the_command_line_and_refuses_fully_sampled_data(tmp_path):
    """The documented command; fully sampled data with mask "none" ends in one line naming the
    file, with nothing written."""
    full = tmp_path / "full.npy"
    np.save(full, _slice_kspace().numpy())
    config = f"['{RVN}/configs/inference.json','{RVN}/configs/adapt.json']"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--kspace_file", str(full),
           "--output_dir", str(tmp_path / "out"), "--device", "$torch.device('cpu')"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"error: {full}: k-space is fully sampled" in result.stderr
    assert not (tmp_path / "out").exists()


def test_overlay_undersamples_fully_sampled_data_on_request(tmp_path):
    full = tmp_path / "full.npy"
    np.save(full, _slice_kspace().numpy())
    wf = _adapt_overlay(full, tmp_path / "out", mask="random1d", acceleration=4, adapt_steps=1, adapt_val_every=1)
    report = wf.parser.get_parsed_content("adaptation").run()
    assert "retrospective undersampling" in report["addendum"].read_text()


def test_overlay_refuses_bad_input_and_writes_nothing(tmp_path):
    full = tmp_path / "full.npy"
    np.save(full, _slice_kspace().numpy())
    mask = make_mask("random1d", (80, 112), 4, 0.08, 0)
    few = calibration_mask(mask) & mask
    sparse = tmp_path / "sparse.npy"
    np.save(sparse, (_slice_kspace() * few).numpy())
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write_undersampled(mixed / "a.npy", num_coils=4)
    _write_undersampled(mixed / "b.npy", num_coils=3)

    cases = [(full, "k-space is fully sampled"), (sparse, "cannot split the acquired samples"),
             (mixed, "3 coils, but .*a.npy has 4")]
    for source, problem in cases:
        out = tmp_path / f"out_{source.stem}"
        with pytest.raises(InvalidInputError, match=problem) as caught:
            _adapt_overlay(source, out).parser.get_parsed_content("adaptation").run()
        message = str(caught.value)
        assert "\n" not in message and message.startswith(str(mixed / "b.npy") if source == mixed else str(source))
        assert not out.exists()


def test_adapt_and_reconstruct_opens_the_overlay_and_refuses_an_unknown_override():
    """One slice in memory through the bundle's adapt.json over its inference.json: the override
    sets the overlay's id, the "before" image is the shipped weights' reconstruction, and an id
    neither config defines is refused, naming it, before any work; a bundle without adapt.json
    (the U-Net's) is refused, naming the bundle."""
    from mribundles.adaptation import adapt_and_reconstruct

    bundle = REPO / "bundles" / "brain_mri_recon_varnet"
    kspace = _slice_kspace()
    mask = make_mask("random1d", kspace.shape[-2:], 4, 0.08, 0)
    out = adapt_and_reconstruct(bundle, kspace * mask, mask, reference=rss(ifft2c(kspace)),
                                overrides={"adapt_steps": 1, "adapt_val_every": 1})
    assert out["bundle"] == "brain_mri_recon_varnet" and out["settings"]["steps"] == 1
    assert out["adaptation"]["steps_run"] == 1 and out["adaptation"]["best_loss"] <= out["adaptation"]["start_loss"]
    assert {name: tuple(image.shape) for name, image in out["images"].items()} == {
        "zero-filled": (80, 112), "before": (80, 112), "after": (80, 112)}
    torch.testing.assert_close(out["images"]["zero-filled"], rss(ifft2c(kspace * mask)))
    assert out["metrics"]["before"]["psnr"] > out["metrics"]["zero-filled"]["psnr"]  # the shipped weights ran
    with pytest.raises(InvalidInputError, match=r"bundle brain_mri_recon_varnet has no config id 'adapt_step' to override"):
        adapt_and_reconstruct(bundle, kspace * mask, mask, overrides={"adapt_step": 1})
    with pytest.raises(InvalidInputError) as caught:
        adapt_and_reconstruct(UNET, kspace * mask, mask)
    assert str(caught.value) == f"{UNET}: no configs/adapt.json in the bundle"


# --- the head mask ---------------------------------------------------------------------------

def test_head_mask_is_the_filled_head_and_masked_psnr_matches_psnr():
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(128.0), indexing="ij")
    r = (((yy - 48) / 36) ** 2 + ((xx - 64) / 50) ** 2).sqrt()
    head = torch.where(r < 1, torch.where((r > 0.8) & (r < 0.9), 0.02, 1.0), 0.0)  # a dark skull ring
    noisy = head + 0.01 * torch.rand(head.shape, generator=torch.Generator().manual_seed(0))
    mask = head_mask(noisy)
    assert mask.dtype == torch.bool and mask.shape == noisy.shape
    inside = r < 0.95
    assert bool(mask[inside].all())  # the ring is filled
    assert float(mask[r > 1.15].float().mean()) == 0.0  # background excluded
    pred = noisy + 0.05
    assert masked_psnr(noisy, pred, torch.ones_like(mask)) == pytest.approx(psnr(noisy, pred))
    assert masked_psnr(noisy, torch.where(mask, noisy, 0), mask) == float("inf")
    with pytest.raises(InvalidInputError):
        masked_psnr(noisy, pred, torch.zeros_like(mask))
