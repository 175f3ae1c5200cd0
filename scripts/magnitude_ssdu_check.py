#!/usr/bin/env python
"""Why magnitude-only networks are not adapted: the SSDU held-out loss of a magnitude image.

SSDU compares a reconstruction's multi-coil k-space with held-out acquired samples. A network
that returns only a magnitude image m has no k-space of its own; the best one can form is
F S m, with coil maps S estimated from the calibration box (they carry the smooth phase). This
script scores, on REAL raw k-space (the 32-coil phantom and the 16-coil in-vivo brain, with the
benchmark's masks: seed 0, centre 0.32/R, the first split of `adaptation.ssdu_split`), the
held-out loss of the fully sampled reference's RSS and of the zero-filled RSS through that
model, without and with the phase of the zero-filled SENSE combination. Where the reference
scores worse than zero-filling, lowering the loss cannot be trusted to improve the image
(`mribundles.adaptation.models`).

    python scripts/magnitude_ssdu_check.py
"""

from __future__ import annotations

import numpy as np
import torch

import mribundles
from mribundles.adaptation.ssdu import ssdu_loss, ssdu_split
from mribundles.physics import make_mask
from mribundles.physics.coils import estimate_sensitivities, rss, sens_expand
from mribundles.physics.fft import ifft2c
from mribundles.physics.masks import calibration_size

# file, and whether its last axis is the readout (the phantom's is: transpose so that 1D masks
# choose phase-encode lines, as the data README says)
SCANS = [("pulseq_phantom_gre_32ch_ksp.npy", True), ("pulseq_invivo_brain_16ch_ksp.npy", False)]
SETTINGS = [("1D random 4x", "random1d", 4), ("1D random 8x", "random1d", 8), ("2D Poisson 8x", "poisson2d", 8)]


def holdout_losses(kspace: torch.Tensor, kind: str, acceleration: int) -> dict[str, float]:
    """{"reference", "zero-filled", each "+ phase"}: held-out SSDU loss of F S m for each image m."""
    mask = make_mask(kind, kspace.shape[-2:], acceleration, 0.32 / acceleration, 0)
    split = ssdu_split(mask, 0.4, 0.1, (0, 0), 0, "point")
    seen = split.input | split.loss
    maps = estimate_sensitivities(kspace * seen, calibration_size(seen))
    phase = torch.exp(1j * (maps.conj() * ifft2c(kspace * seen)).sum(0).angle())
    images = {"reference": rss(ifft2c(kspace)), "zero-filled": rss(ifft2c(kspace * mask))}
    losses = {}
    for name, image in images.items():
        for label, factor in (("", 1.0), (" + phase", phase)):
            predicted = sens_expand((image.to(torch.complex64) * factor)[None], maps[None])
            losses[name + label] = float(ssdu_loss(predicted, (kspace * mask)[None], split.holdout))
    return losses


def main() -> None:
    print("held-out SSDU loss of F S m (an all-zero image scores 2.0); REAL raw k-space")
    print("| scan | sampling | reference | zero-filled | reference + phase | zero-filled + phase |")
    print("|---|---|---|---|---|---|")
    for name, transpose in SCANS:
        kspace = torch.from_numpy(np.load(mribundles.sample_data.path(name)))
        if transpose:
            kspace = kspace.transpose(-1, -2).contiguous()
        for label, kind, acceleration in SETTINGS:
            losses = holdout_losses(kspace, kind, acceleration)
            print(f"| {name} | {label} | {losses['reference']:.3f} | {losses['zero-filled']:.3f} | "
                  f"{losses['reference + phase']:.3f} | {losses['zero-filled + phase']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
