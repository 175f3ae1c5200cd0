"""Reconstruction networks: shapes on awkward sizes, scale equivariance, coil counts, masks;
the complex <-> channels boundary; batch preparation for the engines. Tiny widths keep it fast."""

from __future__ import annotations

import pytest
import torch

from mribundles.engines import PrepareBatchKeys
from mribundles.networks import ImageUnet, NormUnet, RecurrentVarNet, Unet, VarNet
from mribundles.networks.complex_channels import channels_to_complex, complex_to_channels
from mribundles.physics import make_mask


def _crandn(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.complex64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine each parallel
    region waits for a descheduled worker: measured 2.6 s instead of 0.01 s per tiny VarNet pass
    with 2 threads while a training run held both cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# The unrolled k-space networks share their contract (shapes, masks, scale, coils): each test
# of it runs on both.
UNROLLED = {
    "varnet": lambda: VarNet(num_cascades=2, chans=4, pools=2, sens_chans=2, sens_pools=2).eval(),
    "rvn": lambda: RecurrentVarNet(num_steps=2, hidden_chans=4, num_layers=2, sens_chans=2, sens_pools=2).eval(),
}
unrolled = pytest.mark.parametrize("network", list(UNROLLED))


def test_unet_shape():
    net = Unet(3, 5, chans=4, num_pools=3)
    assert net(torch.randn(2, 3, 32, 48)).shape == (2, 5, 32, 48)


@pytest.mark.parametrize("size", [(37, 50), (16, 16), (9, 7)])
def test_norm_unet_odd_sizes(size):
    net = NormUnet(2, chans=4, num_pools=3)
    x = torch.randn(2, 2, *size)
    assert net(x).shape == (2, 2, *size)


def test_norm_unet_scale_equivariant():
    net = NormUnet(2, chans=4, num_pools=3).eval()
    x = torch.randn(1, 2, 37, 50)
    with torch.no_grad():
        y, y_scaled = net(x), net(1e3 * x)
    assert _rel(y_scaled, 1e3 * y) < 1e-4


def test_image_unet_shape_and_scale_equivariance():
    net = ImageUnet(chans=4, num_pools=2).eval()
    x = torch.rand(2, 1, 21, 30)
    with torch.no_grad():
        y, y_scaled = net(x), net(1e3 * x)
    assert y.shape == (2, 1, 21, 30)
    assert _rel(y_scaled, 1e3 * y) < 1e-4


def test_complex_channels_round_trip():
    x = _crandn(2, 3, 5, 4)
    channels = complex_to_channels(x)
    assert channels.shape == (2, 6, 5, 4) and channels.dtype == torch.float32
    torch.testing.assert_close(channels[:, :3], x.real, rtol=0, atol=0)
    torch.testing.assert_close(channels[:, 3:], x.imag, rtol=0, atol=0)
    torch.testing.assert_close(channels_to_complex(channels), x, rtol=0, atol=0)


def _masked(coils: int, shape=(24, 20), kind: str = "random1d", batch: int = 1, seed: int = 0):
    kspace = _crandn(batch, coils, *shape, seed=seed)
    mask = make_mask(kind, shape, 3, 0.2, seed)
    return kspace * mask, mask


@pytest.mark.parametrize("coils", [4, 12])
@pytest.mark.parametrize("kind", ["random1d", "poisson2d"])
@unrolled
def test_unrolled_shapes(network, coils, kind):
    net = UNROLLED[network]()
    kspace, mask = _masked(coils, kind=kind, batch=2)
    with torch.inference_mode():
        out = net(kspace, mask)  # a (ky, kx) mask shared by the batch
        out_batched = net(kspace, mask.expand(2, *mask.shape))  # (B, ky, kx)
    assert out.shape == (2, 1, 24, 20) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and (out >= 0).all()
    torch.testing.assert_close(out, out_batched, rtol=0, atol=0)


@unrolled
def test_unrolled_odd_size_and_float_mask(network):
    net = UNROLLED[network]()
    kspace, mask = _masked(3, shape=(25, 19))
    with torch.inference_mode():
        out = net(kspace, mask.float())
        torch.testing.assert_close(out, net(kspace, mask), rtol=0, atol=0)
    assert out.shape == (1, 1, 25, 19)


@unrolled
def test_unrolled_scale_equivariant(network):
    net = UNROLLED[network]()
    kspace, mask = _masked(4)
    with torch.inference_mode():
        y, y_scaled = net(kspace, mask), net(1e3 * kspace, mask)
    assert _rel(y_scaled, 1e3 * y) < 1e-4


@unrolled
def test_unrolled_coils_are_a_set(network):
    """Sensitivities and cascades treat coils alike: permuting coils leaves the image unchanged."""
    net = UNROLLED[network]()
    kspace, mask = _masked(5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.inference_mode():
        torch.testing.assert_close(net(kspace[:, perm], mask), net(kspace, mask), rtol=1e-4, atol=1e-6)


def test_rvn_without_regulariser_returns_the_zero_filled_image():
    """With every regulariser's head at zero and unit data-consistency weights each step keeps
    the measured samples and adds nothing: the output is the zero-filled RSS, on its scale."""
    from mribundles.physics import rss
    from mribundles.physics.fft import ifft2c

    net = UNROLLED["rvn"]()
    for step in net.steps:
        torch.nn.init.zeros_(step.regulariser.head.weight)
        torch.nn.init.zeros_(step.regulariser.head.bias)
    kspace, mask = _masked(4)
    with torch.inference_mode():
        torch.testing.assert_close(net(1e3 * kspace, mask), rss(ifft2c(1e3 * kspace)).unsqueeze(1), rtol=1e-5, atol=1e-3)


def test_rvn_hidden_state_carries_across_steps():
    """The recurrence is real: the last step's update depends on the initialiser (through the
    hidden state), and training reaches the data-consistency weights of every step after the
    first (which starts on the measured samples, so its data term is zero)."""
    net = UNROLLED["rvn"]().train()
    kspace, mask = _masked(3)
    net(kspace, mask).sum().backward()
    assert net.initialiser.heads[0].weight.grad.abs().sum() > 0
    assert all(step.dc_weight.grad is not None and step.dc_weight.grad.abs() > 0 for step in net.steps[1:])
    with torch.inference_mode():
        before = net.eval()(kspace, mask)
        torch.nn.init.zeros_(net.initialiser.heads[1].weight)  # the second layer's first hidden state
        torch.nn.init.zeros_(net.initialiser.heads[1].bias)
        assert _rel(net(kspace, mask), before) > 1e-4


def test_prepare_batch_keys():
    batch = {
        "kspace": _crandn(1, 2, 4, 4),
        "target": torch.rand(1, 1, 4, 4),
        "mask": torch.ones(1, 4, 4, dtype=torch.bool),
        "other": torch.zeros(1),
    }
    prepare = PrepareBatchKeys("kspace", "target", extra_keys=["mask"])
    inputs, label, args, kwargs = prepare(batch, device=torch.device("cpu"))
    assert torch.equal(inputs, batch["kspace"]) and torch.equal(label, batch["target"])
    assert isinstance(args, tuple) and len(args) == 1 and torch.equal(args[0], batch["mask"])
    assert kwargs == {}
    # Moved to the requested device (the meta device stands in for an accelerator).
    inputs, label, args, _ = prepare(batch, device=torch.device("meta"))
    assert inputs.device.type == label.device.type == args[0].device.type == "meta"
    assert args[0].dtype == torch.bool and inputs.dtype == torch.complex64
    # No label key, or a label key missing from the batch (inference): label is None.
    assert PrepareBatchKeys("kspace")(batch)[1] is None
    assert PrepareBatchKeys("kspace", "target")({"kspace": batch["kspace"]})[1] is None


def test_image_unet_is_identity_before_it_learns_a_correction():
    """The residual lives in the normalised domain: with a zero head the output is the input,
    on the input's own scale and offset (a residual added outside would add the mean twice)."""
    model = ImageUnet(chans=4, num_pools=2)
    torch.nn.init.zeros_(model.norm_unet.unet.head.weight)
    torch.nn.init.zeros_(model.norm_unet.unet.head.bias)
    image = torch.rand(2, 1, 21, 30) * 7 + 3
    torch.testing.assert_close(model(image), image, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampling", ["cartesian", "radial"])
def test_reconresnet_shapes_scale_equivariance_and_gradients(sampling):
    from mribundles.networks import ReconResNet
    from mribundles.physics.radial import golden_angle_trajectory

    torch.manual_seed(0)
    network = ReconResNet(sampling, chans=8, num_blocks=2, dropout=0.0).eval()
    if sampling == "radial":
        kspace = torch.randn(2, 3, 16, 48, dtype=torch.complex64)  # 16 spokes of 48 samples: a 24 x 24 image
        sampling_input = golden_angle_trajectory(16, 48).reshape(2, 16, 48)
        size = (24, 24)
    else:
        mask = make_mask("random1d", (20, 18), 4, 0.2, seed=0)
        kspace = torch.randn(2, 3, 20, 18, dtype=torch.complex64) * mask
        sampling_input = mask[None].expand(2, -1, -1)
        size = (20, 18)
    out = network(kspace, sampling_input)
    assert out.shape == (2, 1, *size) and torch.isfinite(out).all()
    # Instance normalisation and linear operators: scaling the data scales the image.
    torch.testing.assert_close(network(kspace * 1000, sampling_input), out * 1000, rtol=1e-3, atol=1e-3 * float(out.max()) * 1000)
    out.sum().backward()
    assert network.dc_weight.grad is not None and network.regulariser.layers[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sampling must be one of"):
        ReconResNet("spiral")
