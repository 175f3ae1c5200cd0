"""Self-supervision via data undersampling (SSDU), with the zero-shot variant's held-out set.

Written from Yaman et al., "Self-supervised learning of physics-guided reconstruction neural
networks without fully sampled reference data" (MRM 2020), and Yaman, Hosseini, Akcakaya,
"Zero-shot self-supervised learning for MRI reconstruction" (ICLR 2022):

- The acquired sampling mask Omega is split into disjoint sets: Theta, which the network sees
  (as its input and in its data consistency), and Lambda, on which the loss compares the
  network's multi-coil k-space with the measured samples. A new Theta/Lambda split is drawn at
  every step, so that over the run every acquired sample serves both roles.
- Zero-shot: a further subset Gamma of Omega is held out for the whole run. Every few steps the
  network is fed Omega \\ Gamma and its k-space is compared with the samples in Gamma; this
  held-out loss decides which weights to keep and when to stop.
- The loss is the normalised l1-l2 loss of the MRM paper:
  ||u - v||_2 / ||u||_2 + ||u - v||_1 / ||u||_1, with u the measured and v the predicted
  samples in Lambda (complex moduli; all coils).

The fully sampled centre (the calibration box of `physics.calibration_mask`, from which the
networks estimate their coil sensitivities) always stays in Theta, so the sensitivities that the
network computes from its input are those of the acquisition. The held-out set is drawn in the
acquisition's own unit: whole phase-encode lines of a 1D (column) mask, single points of a 2D
mask, so that validating means predicting what an acquisition of that kind leaves out. The
input/loss split is drawn in `unit`: by default the same ("auto"); single points ("point") keep
part of every acquired line in the input, as the papers do.

Masks are torch.bool (ky, kx); k-space is complex (B, coil, ky, kx) or (coil, ky, kx).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mribundles.adaptation.models import KspaceModel, kspace_model
from mribundles.physics.calibration import calibration_mask

__all__ = [
    "SPLIT_UNITS",
    "AdaptationResult",
    "MaskSplit",
    "UnsplittableMaskError",
    "adapt",
    "draw_subset",
    "holdout_loss",
    "split_unit",
    "ssdu_loss",
    "ssdu_split",
    "trainable_parameters",
]

logger = logging.getLogger(__name__)

SPLIT_UNITS = ("auto", "line", "point")


class UnsplittableMaskError(ValueError):
    """A mask with too few samples outside its calibration centre to split for self-supervision.

    Its own class so that a caller can tell "this scan cannot be adapted on" (run the bundle as
    it is) from any other error."""


Seed = int | Sequence[int]


@dataclass(frozen=True)
class MaskSplit:
    """Disjoint bool (ky, kx) masks whose union is the acquired mask: what the network sees
    (`input`, which holds the calibration centre), what the loss is taken on (`loss`), and the
    held-out samples that validate (`holdout`)."""

    input: torch.Tensor
    loss: torch.Tensor
    holdout: torch.Tensor


def split_unit(mask: torch.Tensor) -> str:
    """"line" when every column of the (ky, kx) mask is sampled entirely or not at all (a 1D
    mask: whole phase-encode lines along the last axis), else "point"."""
    columns = mask.any(0)
    return "line" if bool((mask == columns).all()) else "point"


def draw_subset(mask: torch.Tensor, fraction: float, seed: Seed, keep: torch.Tensor | None = None, unit: str = "auto") -> torch.Tensor:
    """A seeded random subset of the sampled units of `mask` outside `keep`.

    ``max(1, round(fraction * n))`` of the n candidate units (lines or points, see `split_unit`)
    are drawn uniformly without replacement by ``numpy.random.default_rng(seed)``.

    Args:
        mask: bool (ky, kx), the samples to draw from.
        fraction: share of the candidate units to draw, in (0, 1).
        seed: int or sequence of ints; the same arguments always give the same subset.
        keep: bool (ky, kx), samples that are never drawn (the calibration centre).
        unit: "line", "point" or "auto".

    Returns:
        bool (ky, kx), a subset of ``mask & ~keep``.

    Raises:
        ValueError: a bad fraction or unit.
        UnsplittableMaskError: too few candidates to draw some and leave some.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    if unit not in SPLIT_UNITS:
        raise ValueError(f"split unit must be one of {SPLIT_UNITS}, got {unit!r}")
    unit = split_unit(mask) if unit == "auto" else unit
    keep = torch.zeros_like(mask) if keep is None else keep
    free = mask & ~keep
    # Lines: a column is a candidate when it is sampled and has no kept sample.
    candidates = (free.any(0) & ~keep.any(0)) if unit == "line" else free.flatten()
    index = torch.nonzero(candidates.cpu()).flatten().numpy()
    count = max(1, round(fraction * index.size))
    if count >= index.size:
        raise UnsplittableMaskError(f"too few sampled {unit}s outside the calibration centre to split "
                                    f"({index.size}; a split of {fraction:.0%} needs at least 2)")
    chosen = torch.from_numpy(np.random.default_rng(seed).choice(index, size=count, replace=False))
    drawn = torch.zeros(candidates.numel(), dtype=torch.bool)
    drawn[chosen] = True
    drawn = drawn.to(mask.device)
    drawn = drawn.expand_as(mask) if unit == "line" else drawn.reshape(mask.shape)
    return drawn & free


def _seed(seed: Seed, *more: int) -> list[int]:
    """One seed sequence for numpy from a base seed and stream indices."""
    base = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    return [*base, *more]


_HOLDOUT_STREAM, _LOSS_STREAM = 0, 1


def ssdu_split(mask: torch.Tensor, loss_fraction: float = 0.4, holdout_fraction: float = 0.1, seed: Seed = 0,
               step: int = 0, unit: str = "auto") -> MaskSplit:
    """Split an acquired mask into SSDU's input, loss and held-out sets.

    The held-out set depends only on ``(mask, holdout_fraction, seed)`` and is drawn in the
    mask's own unit (`split_unit`): it is the same at every step, as zero-shot SSDU requires.
    The input/loss split of the remaining samples is drawn afresh for every ``step``, in `unit`.
    The calibration centre of `mask` stays in the input set.

    Args:
        mask: bool (ky, kx), the acquired samples (Omega).
        loss_fraction: share of the units left after the held-out set (outside the centre) that
            go to the loss set (Lambda); the paper's rho = 0.4.
        holdout_fraction: share of the units outside the centre held out (Gamma); 0 for none
            (plain SSDU on a database of scans).
        seed: int or sequence of ints (e.g. (seed, slice index)).
        step: the iteration whose input/loss split to draw.
        unit: the input/loss split's unit, "line", "point" or "auto" (`split_unit` of the mask).

    Returns:
        MaskSplit with disjoint masks whose union is `mask`.

    Raises:
        UnsplittableMaskError: too few samples outside the calibration centre to split.
    """
    mask = mask.to(torch.bool)
    centre = calibration_mask(mask) & mask
    if holdout_fraction > 0:
        holdout = draw_subset(mask, holdout_fraction, _seed(seed, _HOLDOUT_STREAM), centre, "auto")
    else:
        holdout = torch.zeros_like(mask)
    loss = draw_subset(mask & ~holdout, loss_fraction, _seed(seed, _LOSS_STREAM, step), centre, unit)
    return MaskSplit(input=mask & ~holdout & ~loss, loss=loss, holdout=holdout)


def ssdu_loss(predicted: torch.Tensor, measured: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised l1-l2 loss on the masked k-space samples, averaged over the batch.

    Args:
        predicted: complex (B, coil, ky, kx), the network's multi-coil k-space.
        measured: complex (B, coil, ky, kx), the acquired k-space.
        mask: bool (B, ky, kx) or (ky, kx), the samples to compare (Lambda or Gamma).

    Returns:
        float scalar: mean over the batch of ||u - v||_2 / ||u||_2 + ||u - v||_1 / ||u||_1,
        u = measured and v = predicted samples in the mask (all coils, complex moduli); zero
        when the prediction equals the measurement there.
    """
    weight = mask.to(torch.bool).unsqueeze(-3)
    residual = torch.where(weight, predicted - measured, 0).abs().flatten(1)
    reference = torch.where(weight, measured, 0).abs().flatten(1)
    tiny = torch.finfo(reference.dtype).tiny
    l2 = residual.norm(dim=1) / reference.norm(dim=1).clamp_min(tiny)
    l1 = residual.sum(1) / reference.sum(1).clamp_min(tiny)
    return (l2 + l1).mean()


@dataclass
class AdaptationResult:
    """What `adapt` did: the held-out loss at the start and of the weights it kept, the step
    those weights are from (0 = the start), the steps it ran of the most it could, its seconds,
    and the history of (step, held-out loss) validations. The history's lowest loss may lie below
    `best_loss` when that fall was too small to trust (`adapt`'s ``min_improvement``)."""

    start_loss: float
    best_loss: float
    best_step: int
    steps_run: int
    max_steps: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.steps_run < self.max_steps


def _as_items(items: Sequence[dict], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(kspace complex (1, coil, ky, kx), mask bool (ky, kx))] on the device, zero outside the mask."""
    out = []
    for item in items:
        mask = torch.as_tensor(item["mask"]).to(device=device, dtype=torch.bool).reshape(item["mask"].shape[-2:])
        kspace = torch.as_tensor(item["kspace"]).to(device=device, dtype=torch.complex64)
        out.append(((kspace * mask).reshape(1, *kspace.shape[-3:]), mask))
    return out


def holdout_loss(model: KspaceModel, data: list[tuple[torch.Tensor, torch.Tensor]], splits: list[MaskSplit]) -> float:
    """Mean over the scans of the SSDU loss on the held-out samples, the network fed the rest
    of the acquired samples (input and loss sets)."""
    model.network.eval()
    total = 0.0
    with torch.no_grad():
        for (kspace, _), split in zip(data, splits):
            seen = split.input | split.loss
            total += float(ssdu_loss(model.kspace(kspace * seen, seen[None]), kspace, split.holdout))
    return total / len(data)


def trainable_parameters(network: nn.Module, frozen: Sequence[str] = ()) -> list[nn.Parameter]:
    """The parameters of ``network`` outside the submodules named in ``frozen``.

    An unrolled network's sensitivity model (``sens_net``) is the one place where SSDU's k-space
    loss can be met without a better image: maps that no longer describe the coils can still fit
    the held-out multi-coil samples. Seen with the VarNet bundle at 2D Poisson 8x on the real
    16-coil in-vivo test scan (a diagnosis, never a training set): the held-out loss fell from
    1.90 to 1.00 while the PSNR inside the head fell from 18.6 to 11.7 dB; with ``sens_net``
    frozen the two moved together. Freezing keeps the maps that the calibration region gives.

    Raises:
        ValueError: a name in ``frozen`` that is not a submodule of ``network`` (a misspelling
            would otherwise adapt everything).
    """
    modules = dict(network.named_modules())
    unknown = [name for name in frozen if name not in modules or not name]
    if unknown:
        raise ValueError(f"cannot freeze {unknown}: {type(network).__name__} has no such submodule")
    fixed = {id(p) for name in frozen for p in modules[name].parameters()}
    return [p for p in network.parameters() if id(p) not in fixed]


def _snapshot(network: nn.Module) -> dict:
    return copy.deepcopy(network.state_dict())


def adapt(
    network: nn.Module | KspaceModel,
    items: Sequence[dict],
    steps: int = 200,
    lr: float = 3e-3,
    loss_fraction: float = 0.4,
    holdout_fraction: float = 0.1,
    val_every: int = 10,
    patience: int = 10,
    min_improvement: float = 0.2,
    seed: int = 0,
    unit: str = "point",
    frozen: Sequence[str] = (),
    network_input: str = "kspace",
    progress: bool = True,
) -> AdaptationResult:
    """Fine-tune a reconstruction network on undersampled scans with no reference (zero-shot SSDU).

    Every step takes the next scan (a seeded shuffle per pass), draws a new input/loss split of
    its acquired samples outside the held-out set, and takes one Adam step on `ssdu_loss` of
    the network's k-space on the loss set. Every `val_every` steps (and at step 0) the held-out
    loss (`holdout_loss`) is measured; the weights with the lowest one are kept, step 0's
    included, and the run stops after `patience` validations without improvement. The
    lowest-loss weights replace the starting ones only when their held-out loss is at least
    `min_improvement` (a fraction) below the start's. The network is left holding the kept
    weights, in eval mode: never worse on the held-out samples than the weights it started with.

    Why a margin: the held-out set of a small 1D acquisition is a line or two, and a small fall of
    its loss says little about the rest of the missing k-space. On the real 64x64 phantom (not a
    test scan; 1D masks with 3 to 12 lines outside the centre, one held out), the runs whose
    held-out loss fell by 8 to 11 % lowered the image inside the head or barely moved it
    (Recurrent VarNet at 1D 8x by -1.3 dB, VarNet at 1D 4x by -2.3 dB, VarNet at 2D Poisson 8x
    by +0.2 dB), while those that lifted it by 2 to 5 dB fell by more than 60 %. 0.2 lies
    between the two groups.

    The defaults were chosen on the held-out loss alone (never on a reference image) of zero-shot
    runs of the Recurrent VarNet bundle on one real 16-coil brain slice: at 1D 4x with line
    splits, lr 3e-3 reached a lower held-out loss within 200 steps than 1e-3 and 1e-4; point
    splits then reached a lower one than line splits (1.36 against 1.45); at 1D 8x the held-out
    loss first rose, and fell below the start only after 90 steps, hence a patience of 10
    validations.

    Args:
        network: the reconstruction network (on its device), or a `KspaceModel` around it.
        items: scans, dicts with "kspace" complex (coil, ky, kx) (as acquired, zero where not
            sampled) and "mask" bool (ky, kx); one scan is zero-shot adaptation.
        steps: the most Adam steps.
        lr: Adam's learning rate.
        loss_fraction, holdout_fraction, unit: the split (`ssdu_split`).
        val_every: steps between validations.
        patience: validations without improvement before stopping.
        min_improvement: the fall of the held-out loss, as a fraction of its start, that the
            adapted weights must reach to be kept; 0 keeps any fall.
        seed: seeds the held-out sets, the splits and the order of the scans.
        frozen: names of the network's submodules whose weights stay as they are (e.g.
            ``["sens_net"]``, `trainable_parameters`).
        network_input: what the bundle feeds the network; only "kspace" (network(kspace, mask))
            is adapted (`models.kspace_model`).
        progress: show a tqdm bar (only on a terminal, `report.progress_enabled`).

    Returns:
        AdaptationResult.

    Raises:
        InvalidInputError: a network that returns only a magnitude image (no ``forward_kspace``),
            or one fed anything but k-space (`models.kspace_model`).
        UnsplittableMaskError: a scan with too few samples outside its calibration centre to split.
        ValueError: a ``min_improvement`` outside [0, 1).
    """
    from tqdm.auto import tqdm

    from mribundles.report import progress_enabled

    if not 0 <= min_improvement < 1:
        raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement}")
    model = network if isinstance(network, KspaceModel) else kspace_model(network, network_input)
    device = next(model.network.parameters()).device
    data = _as_items(items, device)
    holdouts = [ssdu_split(mask, loss_fraction, holdout_fraction, (seed, i), 0, unit) for i, (_, mask) in enumerate(data)]
    optimiser = torch.optim.Adam(trainable_parameters(model.network, frozen), lr=lr)
    order_rng = np.random.default_rng(_seed(seed, len(data)))

    start = time.perf_counter()
    best_loss = start_loss = holdout_loss(model, data, holdouts)
    start_state = _snapshot(model.network)
    best_step, best_state, history, waited = 0, start_state, [(0, start_loss)], 0
    order: list[int] = []
    bar = tqdm(total=steps, desc="SSDU adaptation", disable=not (progress and progress_enabled()), leave=False)
    bar.set_postfix(holdout=f"{start_loss:.4f}")
    step = 0
    for step in range(1, steps + 1):
        if not order:
            order = list(order_rng.permutation(len(data)))
        index = int(order.pop())
        kspace, mask = data[index]
        split = ssdu_split(mask, loss_fraction, holdout_fraction, (seed, index), step, unit)
        model.network.train()
        optimiser.zero_grad(set_to_none=True)
        loss = ssdu_loss(model.kspace(kspace * split.input, split.input[None]), kspace, split.loss)
        loss.backward()
        optimiser.step()
        bar.update(1)
        if step % val_every and step != steps:
            continue
        current = holdout_loss(model, data, holdouts)
        history.append((step, current))
        train_loss = float(loss.detach())
        logger.info("step %d: training loss %.4f, held-out loss %.4f", step, train_loss, current)
        bar.set_postfix(loss=f"{train_loss:.4f}", holdout=f"{current:.4f}", best=f"{min(best_loss, current):.4f}")
        if current < best_loss:
            best_loss, best_step, best_state, waited = current, step, _snapshot(model.network), 0
        else:
            waited += 1
            if waited >= patience:
                break
    bar.close()
    if best_step and best_loss > (1 - min_improvement) * start_loss:
        logger.info("held-out loss fell from %.4f to %.4f (%.0f %%), less than the %.0f %% required: keeping the starting weights",
                    start_loss, best_loss, 100 * (1 - best_loss / start_loss), 100 * min_improvement)
        best_loss, best_step, best_state = start_loss, 0, start_state
    model.network.load_state_dict(best_state)
    model.network.eval()
    return AdaptationResult(start_loss, best_loss, best_step, step, steps, time.perf_counter() - start, history)
