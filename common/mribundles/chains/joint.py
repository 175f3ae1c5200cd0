"""Joint fine-tuning of a reconstruction network through a segmentation network.

A reconstruction network trained alone is rewarded for pixels; the chain's user wants the
tissue labels the segmenter draws from them. Here the reconstruction network of a
reconstruction bundle is fine-tuned end to end through the (frozen) network of a segmentation
bundle: a slab of undersampled k-space slices is reconstructed, assembled into a volume with its
affine, passed through the segmentation bundle's own preprocessing (orientation, spacing,
intensity, all differentiable torch operations) and network, and the segmentation loss (with
the reconstruction's own loss) flows back into the reconstruction weights.

Everything comes from the two stage bundles by reference: the slices go through the
reconstruction bundle's training preprocessing (its random masks and normalisation), its loss is
its own, and the segmenter is the segmentation bundle's network and preprocessing.

Shapes: a slab is ``D`` slices of multi-coil k-space (D, coil, ky, kx); its volume is
(1, kx, ky, D) like the chain's (`ReconStage`), and its labels lie on the grid the segmentation
preprocessing resamples that volume to (1 mm for the tissue bundle).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import DivisiblePad, SpatialResample
from torch import nn

from mribundles.bundles import open_bundle
from mribundles.errors import InvalidInputError
from mribundles.io.geometry import stack_volume
from mribundles.transforms.kspace import restore_scale

__all__ = ["KspaceSlabs", "ReconSegLoss", "ReconSegNetwork", "SlabBatch", "read_bundle_config", "slice_preprocessing"]


class KspaceSlabs(torch.utils.data.Dataset):
    """Slabs of ``num_slices`` planes ``step`` apart from a multi-slice k-space file, with their labels.

    Item ``i`` is the slab whose first plane is ``i``. Each of its slices goes through
    ``slice_transform`` (a reconstruction bundle's training preprocessing: load, undersample,
    zero-fill, normalise; besides the network's inputs it must give ``target`` and ``scale``) and
    the slices are collated into one batch, with the slab's ``affine``. ``label`` is the whole of
    ``label_file`` (one label plane per k-space plane, on the k-space file's affine, so that the
    labels keep the planes between the slab's slices); `ReconSegLoss` resamples it onto the grid
    the segmentation sees.
    """

    def __init__(self, kspace_file: str | os.PathLike, label_file: str | os.PathLike, slice_transform,
                 num_slices: int = 12, step: int = 2):
        from mribundles.io.geometry import kspace_affine
        from mribundles.io.kspace import kspace_shape
        from mribundles.transforms import LoadVolumed

        self.kspace_file, self.slice_transform = str(kspace_file), slice_transform
        self.num_slices, self.step = int(num_slices), int(step)
        shape = kspace_shape(kspace_file)  # refuses a missing or corrupt file, naming it
        if len(shape) != 4:
            raise InvalidInputError(f"expected multi-slice k-space (slice, coil, ky, kx), got shape {tuple(shape)}", kspace_file)
        self.affine, planes = kspace_affine(kspace_file).float(), shape[0]
        self.label = LoadVolumed("label", label_keys="label")({"label": str(label_file)})["label"]
        if self.label.shape[-1] != planes or not np.allclose(self.label.affine.numpy(), self.affine.numpy(), atol=1e-4):
            raise InvalidInputError(f"labels must hold one plane per k-space plane ({planes}) with the k-space file's "
                                    f"affine; got shape {tuple(self.label.shape[1:])}", label_file)
        self.span = self.step * (self.num_slices - 1) + 1  # planes from a slab's first to its last
        if self.span > planes:
            raise InvalidInputError(f"a slab of {self.num_slices} planes {self.step} apart needs {self.span} planes, "
                                    f"the file has {planes}", kspace_file)

    def __len__(self) -> int:
        return self.label.shape[-1] - self.span + 1  # slabs that fit

    def __getitem__(self, first: int) -> dict:
        planes = range(first, first + self.span, self.step)
        batch = list_data_collate([self.slice_transform({"kspace": self.kspace_file, "slice": z}) for z in planes])
        to_slab = torch.eye(4)  # (column, row, k) -> (column, row, plane first + step*k)
        to_slab[2, 2], to_slab[2, 3] = float(self.step), float(first)
        return {**batch, "affine": self.affine @ to_slab, "label": self.label}


class SlabBatch:
    """Prepare a slab for `ReconSegNetwork`: the reconstruction bundle's own batch preparation
    gives the network's k-space input and arguments (its mask), followed by the slab's ``scale``
    and ``affine``; the targets are ``{"target": the normalised reference slices, "label": ...}``."""

    def __init__(self, recon_prepare_batch):
        self.recon_prepare_batch = recon_prepare_batch

    def __call__(self, batch: dict, device=None, non_blocking: bool = False, **kwargs):
        inputs, _, args, recon_kwargs = self.recon_prepare_batch(batch, device, non_blocking, **kwargs)
        scale = torch.as_tensor(batch["scale"]).to(device=device, dtype=torch.float32)
        targets = {key: batch[key].to(device=device, non_blocking=non_blocking) for key in ("target", "label")}
        return inputs, targets, (*args, scale, batch["affine"].to(device)), recon_kwargs


class ReconSegNetwork(nn.Module):
    """``recon_network`` (trained) -> volume -> ``seg_preprocessing`` -> ``seg_network`` (frozen).

    ``forward(kspace, *recon_args, scale, affine)``: ``kspace`` and ``recon_args`` are what the
    reconstruction network takes (`SlabBatch`), ``scale`` (D,) undoes its input normalisation
    (`transforms.kspace.restore_scale`, as the bundle's `RestoreScaled` does) and ``affine``
    places the slab: the volume is assembled as `ReconStage` assembles it (`io.geometry`). Returns the normalised reconstructions
    (D, 1, ky, kx), for the reconstruction loss, and the segmentation logits (1, classes, ...)
    as a MetaTensor with the affine of the grid they lie on.

    The volume is padded at its far ends to a multiple of ``size_divisor`` (the segmentation
    network's total downsampling) and the logits are cropped back: the bundle's sliding-window
    inferer pads the same way at inference, but its 96^3 windows would cost several times the
    compute of one pass over a thin slab.

    The segmentation network stays in eval mode and gets no gradient of its own: it judges, the
    reconstruction learns. Only the reconstruction network's weights are saved (`state_dict`
    of ``recon_network``), so they load into the reconstruction bundle's network as they are.
    """

    def __init__(self, recon_network: nn.Module, seg_network: nn.Module, seg_preprocessing, size_divisor: int = 8):
        super().__init__()
        self.recon_network, self.seg_network = recon_network, seg_network
        self.seg_preprocessing = seg_preprocessing
        self.pad = DivisiblePad(size_divisor, method="end")
        self.seg_network.requires_grad_(False)

    def train(self, mode: bool = True) -> ReconSegNetwork:
        super().train(mode)
        self.seg_network.eval()
        return self

    def forward(self, kspace: torch.Tensor, *args):
        *recon_args, scale, affine = args
        image = torch.as_tensor(self.recon_network(kspace, *recon_args)).float()  # (D, 1, ky, kx)
        volume = stack_volume(restore_scale(image, scale)[:, 0], affine)  # (1, kx, ky, D), as ReconStage
        seg_input = self.seg_preprocessing({"image": volume})["image"]
        x, y, z = seg_input.shape[1:]
        logits = self.seg_network(self.pad(seg_input.as_tensor())[None])[..., :x, :y, :z]
        return image, MetaTensor(logits, affine=seg_input.affine)


class ReconSegLoss(nn.Module):
    """``seg_loss(logits, label) + recon_weight * recon_loss(image, target)``.

    The labels (1, ...) come with their own affine and are resampled (nearest neighbour, MONAI's
    `SpatialResample`) onto the grid of the logits, which the segmentation bundle's
    preprocessing chose; ``seg_loss`` takes one-channel integer labels (DiceCELoss with
    ``to_onehot_y``).
    """

    def __init__(self, seg_loss: nn.Module, recon_loss: nn.Module, recon_weight: float = 1.0):
        super().__init__()
        self.seg_loss, self.recon_loss, self.recon_weight = seg_loss, recon_loss, float(recon_weight)
        self.resample = SpatialResample(mode="nearest", padding_mode="zeros")

    def forward(self, pred: tuple, targets: dict) -> torch.Tensor:
        image, logits = pred
        label = self.resample(targets["label"], dst_affine=logits.affine, spatial_size=logits.shape[2:])
        seg = self.seg_loss(logits.as_tensor(), torch.as_tensor(label)[None])
        return seg + self.recon_weight * self.recon_loss(image, torch.as_tensor(targets["target"]).float())


def read_bundle_config(bundle: str | os.PathLike, name: str = "train.json"):
    """A bundle's ``configs/<name>`` parsed lazily (a MONAI ``ConfigParser``, opened by
    `bundles.open_bundle`), for a chain to take pieces of it by id."""
    return open_bundle(bundle, config=name).parser


def slice_preprocessing(recon_training):
    """The reconstruction bundle's training preprocessing for slices read from a k-space file, as
    `KspaceSlabs` gives them (``{"kspace": file, "slice": z}``): ``train#file_preprocessing``
    where the bundle has one, since there ``train#preprocessing`` takes the data engine's
    in-memory k-space (Recurrent VarNet, E2E-VarNet), else ``train#preprocessing``.

    Args:
        recon_training: the bundle's parsed ``train.json`` (`read_bundle_config`).
    """
    key = "train#file_preprocessing" if "train#file_preprocessing" in recon_training else "train#preprocessing"
    return recon_training.get_parsed_content(key)
