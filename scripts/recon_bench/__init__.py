"""The pieces of `scripts/bench_recon.py`, the collection's reconstruction benchmark (its
docstring says what it measures and how):

- ``quality``: `settings` (the data, samplings, bundles and targets), `scoring` (one setting, every
  method, inside the head on real data), `targets` (the collection's targets, met or not) and
  `quality` (the run, its table, figures and JSON);
- ``speed``: `speed_models` (the networks and their peers' sizes, the benchmark slice), `peers`
  (fastMRI's VarNet and DIRECT's RecurrentVarNet set up to do our network's job) and `speed`
  (the interleaved timing and its report).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
