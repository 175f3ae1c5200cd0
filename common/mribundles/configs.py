"""Named steps that bundle configs call by ``_target_``, where they used to write ``$`` code.

A ``$`` string in a MONAI config is Python that MONAI ``eval``-s, so a site receiving the bundle
must read every one (``mribundles review`` lists them). A ``_target_`` naming a function here is
checked against the code policy's allow-list instead (`mribundles.sharing.policy`), and reads as
what it does::

    "ckpt_path": {"_target_": "mribundles.configs.path", "root": "@bundle_root", "name": "models/model.pt"}
    "run": [{"_target_": "mribundles.configs.run", "workflow": "@evaluator"}]

MONAI calls a ``_target_`` with keyword arguments only, so every function here takes them by
name. Each does one plain thing: no function here imports, evaluates or reads attributes by a
name that a config gives. The steps of a multi-GPU overlay are in `mribundles.distributed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch

from mribundles.errors import InvalidInputError

__all__ = ["attach", "concat", "device", "for_sampling", "load_checkpoint", "on_device", "parameters", "path", "run",
           "sample_dir", "sampling_label"]

SAMPLINGS = ("radial", "cartesian")


def path(root: str | os.PathLike, name: str) -> str:
    """``root`` joined with ``name`` (``"models/model.pt"``, ``"train"``), as a string.

    Joined as text, exactly as the configs' ``@bundle_root + '/models'`` did: nothing is
    resolved or normalised, so ``..`` parts and relative roots stay as written.
    """
    return os.path.join(os.fspath(root), name)


def sample_dir() -> str:
    """The folder of the data shipped with the library (`mribundles.sample_data`): the
    inference configs' default ``dataset_dir``."""
    from mribundles.sample_data import SAMPLE_DIR

    return str(SAMPLE_DIR)


def device() -> torch.device:
    """The first GPU when there is one, else the CPU: a config's default ``device``
    (``--device cpu`` on the command line chooses another)."""
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def on_device(module: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``module`` moved to ``device`` (the configs' ``network``, from their ``network_def``)."""
    return module.to(device)


def parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters of ``module`` that an optimizer trains."""
    return list(module.parameters())


def concat(lists: Sequence[Sequence]) -> list:
    """The items of ``lists``, one list after another: a Compose's transforms made from parts
    that several Composes share (``[@load_slices, [@train#undersampling], @normalize_slices]``)."""
    return [item for part in lists for item in part]


def run(workflow, data=None):
    """Run ``workflow``: an ignite engine (a MONAI trainer or evaluator, a chain's engine) over
    ``data``, or over its own data loader when ``data`` is None; or anything else with a
    ``run()`` method (`mribundles.adaptation.BundleAdaptation`). A config's ``run`` step."""
    return workflow.run() if data is None else workflow.run(data)


def attach(engine, handlers: Iterable) -> None:
    """Attach every handler of ``handlers`` to ``engine``, in order.

    For handlers that cannot be in the engine's own handler list: a chain's engine is made
    by the chain, and a training's resumable checkpoint saves the trainer, which would then
    refer to itself.
    """
    for handler in handlers:
        handler.attach(engine)


def load_checkpoint(engine, load_path: str | os.PathLike | None, load_dict: dict, map_location=None) -> None:
    """When ``load_path`` is given, load it into ``load_dict`` as ``engine`` starts (MONAI's
    ``CheckpointLoader``, which loads with ``weights_only``); nothing when it is None.

    A training's ``resume_from`` (the whole checkpoint: model, optimizer, scheduler, trainer)
    and ``init_weights`` (``{"model": @network}``: the weights only) both default to None.
    """
    if load_path is None:
        return
    from monai.handlers import CheckpointLoader

    CheckpointLoader(load_path=load_path, load_dict=load_dict, map_location=map_location).attach(engine)


def for_sampling(sampling: str, radial, cartesian):
    """``radial`` or ``cartesian``, whichever ``sampling`` names.

    A bundle that reconstructs both (ReconResNet) keeps each sampling's parts in a block of
    its config; this picks the block's part for the run, so ``--sampling cartesian`` switches
    the whole bundle. Any other value is refused, naming it.
    """
    if sampling not in SAMPLINGS:
        raise InvalidInputError(f"sampling must be one of {', '.join(SAMPLINGS)}, not {sampling!r}")
    return radial if sampling == "radial" else cartesian


def sampling_label(transform) -> str:
    """How ``transform`` undersamples, for a run's tracked settings: ``"random1d 4x"`` (an
    `UndersampleKspaced`), ``"64 spokes"`` (a `SelectSpokesd`), or the labels of the
    transforms of a ``OneOf`` or ``Compose``, joined by commas."""
    if hasattr(transform, "spokes"):
        return f"{transform.spokes} spokes"
    if hasattr(transform, "kind") and hasattr(transform, "acceleration"):
        return f"{transform.kind} {transform.acceleration:g}x"
    return ", ".join(sampling_label(t) for t in transform.transforms)
