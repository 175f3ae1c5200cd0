#!/usr/bin/env python
"""The collection's reconstruction benchmark: quality and seconds per slice of every bundle, and
the VarNet bundle's speed against fastMRI's and the RVN bundle's against DIRECT's.

``quality``: every reconstruction bundle against zero-filling (radial: gridding) and the tuned
L1-wavelet CS baseline, through `mribundles.evaluation.evaluate_recon`, so all methods of a
setting see exactly the same samples:

- data **simulated**: the validation patient of `scripts/make_recon_dataset.py` (pyradiomics
  brain2, 23 slices, never trained on); its k-space is SIMULATED from real images. Cartesian:
  1D random 4x and 8x (centre 0.32/R) and 2D Poisson 8x; radial (bundles with a ``sampling``
  switch): the first 64 and 32 golden-angle spokes.
- data **invivo**: REAL raw k-space, the pulseq 16-coil in-vivo brain shipped in
  `mribundles.sample_data` (one 128x128 slice, whole head, readout 2x oversampled; a TEST scan,
  never trained or tuned on), retrospectively undersampled by the same masks; 1D masks choose
  phase-encode lines (the file's last axis), as a real acquisition does.
- data **phantom**: REAL raw k-space, the pulseq 32-coil GRE phantom shipped in
  `mribundles.sample_data` (one 64x64 slice), retrospectively undersampled by the same masks. Its
  file is (coil, phase-encode, readout): the benchmark scores a transposed copy, so that 1D masks
  choose phase-encode lines here too.

On real data every reconstruction bundle with a ``configs/adapt.json`` also runs after zero-shot
self-supervised adaptation (SSDU, `mribundles.adaptation.adapt_and_reconstruct`) on the same
undersampled samples, and CS runs twice: with its tuned lambda and with an ORACLE lambda picked
on the reference (an upper bound for CS, labelled as such).

NMSE/PSNR/SSIM as fastMRI's `evaluate.py` (whole volume); on real data also PSNR and NMSE inside a
head mask (`metrics.head_mask` of the reference), since the noisy background of a raw scan weighs
on whole-image PSNR. It writes a Markdown table
(``bench_recon.md``) and per setting a PNG of the middle slice (reference, zero-filled or
gridding, each bundle, CS, and their error maps) under ``--out``, prints the table, and checks
the targets of the collection: every bundle beats zero-filling everywhere, beats CS in PSNR at
every Cartesian setting (4x and 8x) on the simulated data and is faster than CS; the radial
bundle beats gridding by 4 dB at 64 spokes; on the real in-vivo brain, inside the head, the best
bundle beats zero-filling by 3 dB at 1D 4x and the oracle CS by 1 dB at 1D 4x and 3 dB at 1D 8x,
and adaptation lifts its bundle by 3 dB at 1D 4x in under 5 minutes and never lowers it. The rows are also written as ``bench_recon.json``.

``speed``: a bundle's network against its peer's, with the same sizes, on the same 320x320 slice:
the shipped real T1 slice (voxelmorph), resized to 320 columns and zero-padded to 320 rows, 8-coil
k-space SIMULATED from it, undersampled by a 4x random column mask. Every model runs in eval mode
under `torch.inference_mode` with the same thread count; after a warm-up the runs are interleaved
(A, B, B, A, ... ; with a third entry A, B, C, C, B, A) so that load drifting on the machine hits
all alike, and the median of ``--repeats`` runs is reported. The target is ratio (ours / peer)
<= 1.0.

- ``--model varnet`` (default): the VarNet bundle's `network_def` against
  `fastmri.models.VarNet` with the same num_cascades, chans, pools, sens_chans and sens_pools.
  Both are timed whole (sensitivity estimation, cascades, RSS). fastMRI gets the slice in its
  own layout (stacked real/imaginary last dimension, a (1, 1, 1, kx, 1) column mask, the number
  of central low frequencies).
- ``--model rvn``: the RVN bundle's `mribundles.networks.RecurrentVarNet` against DIRECT's
  `direct.nn.recurrentvarnet.recurrentvarnet.RecurrentVarNet` (pip package ``direct-recon``)
  with the same num_steps, hidden channels and layers, per-step weights and a learned SENSE
  initialiser with ours' dilations (`direct_rvn_kwargs` says what DIRECT cannot match: its GRU
  gates are 1x1, ours 3x3). DIRECT's model takes precomputed sensitivity maps, ours estimates
  them inside. So ours is timed whole (normalisation, sensitivity estimation, initialiser,
  steps, RSS), and DIRECT's row times the same job: our normalisation and sensitivity
  estimation (the very `sens_net` module of ours, `NormalisedMaps`), DIRECT's initialiser and
  steps on zero-copy real views of the k-space and maps, then the RSS image as DIRECT's engine
  computes it. The estimation is also timed alone in the same interleaved runs; the printed
  second ratio takes its median out of both (a difference of medians, not a timing).

    python scripts/make_recon_dataset.py --data ../shared/data                                      # once
    python scripts/make_recon_dataset.py --sampling radial --out data/generated/recon_brain_radial  # once
    python scripts/bench_recon.py                       # quality, then speed, with their defaults
    python scripts/bench_recon.py quality --data invivo phantom --bundles brain_mri_recon_rvn
    python scripts/bench_recon.py speed --cascades 12 --chans 18 --sens-chans 8   # fastMRI's sizes
    python scripts/bench_recon.py speed --model rvn --threads 1 --repeats 5     # against DIRECT's RVN
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The benchmark's pieces are the package beside this file (scripts/recon_bench); this file is
# also loaded by path (tests/test_bench_recon.py), where scripts/ is not on sys.path.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from recon_bench.peers import direct_rvn_kwargs  # noqa: E402
from recon_bench.quality import quality  # noqa: E402
from recon_bench.settings import RADIAL_BUNDLES, quality_arguments, settings  # noqa: E402
from recon_bench.speed import speed  # noqa: E402
from recon_bench.speed_models import (  # noqa: E402
    RVN_INITIALISER_DILATIONS,
    SIZE_OPTIONS,
    SPEED_MODELS,
    size_overrides,
    speed_arguments,
)
from recon_bench.targets import real_data_checks, target_checks  # noqa: E402

# Besides what `main` runs, the pieces tests/test_bench_recon.py reaches through this file.
__all__ = [
    "RADIAL_BUNDLES", "RVN_INITIALISER_DILATIONS", "SIZE_OPTIONS", "SPEED_MODELS", "direct_rvn_kwargs", "main",
    "quality", "quality_arguments", "real_data_checks", "settings", "size_overrides", "speed", "speed_arguments",
    "target_checks",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", metavar="{quality,speed}", help="default: quality, then speed")
    for name, add_arguments, help_text in (("quality", quality_arguments, "every bundle against the baselines"),
                                          ("speed", speed_arguments, "a bundle's network against its peer's (--model)")):
        add_arguments(parts.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.part is not None:
        return {"quality": quality, "speed": speed}[args.part](args)
    status = quality(parser.parse_args(["quality"]))
    print()
    return status or speed(parser.parse_args(["speed"]))


if __name__ == "__main__":
    sys.exit(main())
