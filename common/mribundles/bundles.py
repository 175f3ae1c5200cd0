"""Locating a bundle's folder, for configs that must run from anywhere, and opening a bundle.

`python -m monai.bundle run --config_file bundles/X/configs/inference.json` gives a config no
way to know where its file lies, and model-zoo's `"bundle_root": "."` only works from inside the
bundle. A config says `"bundle_root": "$mribundles.bundles.bundle_root('X')"` instead.

`open_bundle` is the one way code opens a bundle (stages, evaluation, benchmarks, tests): a
`Bundle` with its metadata, parsed config, network with its weights, and its preprocessing,
inferer and postprocessing as a stage runs them; overrides of ids the config lacks are refused.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The collection's own bundles, next to the library's source root (common/ -> bundles/).
COLLECTION_DIR = Path(__file__).resolve().parents[2] / "bundles"


def bundle_root(name: str) -> str:
    """The folder of bundle `name`, first found of:

    1. the bundle whose config a MONAI workflow is evaluating (`_workflow_bundle`: the folder of
       ``--config_file`` of ``python -m monai.bundle run``), so a copy installed anywhere runs
       with its own weights;
    2. the current directory, when it is that bundle (the MONAI convention);
    3. ``./bundles/<name>``;
    4. the collection's checkout.

    ``--bundle_root`` on the command line still overrides it: MONAI then sets the config's
    ``bundle_root`` id itself, and this function is not called.
    """
    cwd = Path.cwd()
    candidates = [_workflow_bundle(), cwd, cwd / "bundles" / name, COLLECTION_DIR / name]
    for candidate in candidates:
        if candidate is not None and _bundle_name(candidate) == name:
            return str(candidate)
    raise FileNotFoundError(f"bundle {name!r} not found in {cwd}, {cwd / 'bundles'} or {COLLECTION_DIR}")


def _workflow_bundle() -> Path | None:
    """The bundle folder of the MONAI workflow whose config is being evaluated, or None.

    MONAI gives a config no value that says where its file lies, but the
    ``monai.bundle.ConfigWorkflow`` that parses it knows: its ``config_root_path`` is the folder
    of its (first) config file, ``<bundle>/configs``. That workflow is a caller of every config
    expression it evaluates, so it is found on the call stack. The command line is not read, and
    a workflow built in Python counts as much as one from ``python -m monai.bundle run``.
    """
    workflows = sys.modules.get("monai.bundle.workflows")
    if workflows is None:  # MONAI's workflows are not loaded: no config is being run
        return None
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, workflows.ConfigWorkflow):
            folder = Path(owner.config_root_path).resolve()
            return folder.parent if folder.name == "configs" else folder  # as MONAI's run() does
        frame = frame.f_back
    return None


def read_metadata(bundle_dir: str | Path) -> dict:
    """A bundle's ``configs/metadata.json`` as a dictionary."""
    return json.loads((Path(bundle_dir) / "configs" / "metadata.json").read_text(encoding="utf-8"))


def _bundle_name(folder: Path) -> str | None:
    try:
        return read_metadata(folder).get("name")
    except (OSError, ValueError):
        return None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks (weights can be tens of MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_weights_sha256(bundle_dir: str | Path, weights: tuple[str, ...] = ("models/model.pt",)) -> dict[str, str]:
    """Write the SHA-256 of each of ``weights`` (paths relative to the bundle) into metadata.json
    (`weights_sha256`), replacing what it listed before; return them."""
    bundle_dir = Path(bundle_dir)
    meta_file = bundle_dir / "configs" / "metadata.json"
    meta = read_metadata(bundle_dir)
    meta["weights_sha256"] = {rel: file_sha256(bundle_dir / rel) for rel in weights}
    meta_file.write_text(json.dumps(meta, indent=4) + "\n")
    return meta["weights_sha256"]


def check_recorded_weights(bundle_dir: str | Path, metadata: dict) -> None:
    """Refuse weights that differ from the hashes the metadata publishes (`weights_sha256`)."""
    from mribundles.errors import InvalidInputError

    for rel, expected in metadata.get("weights_sha256", {}).items():
        path = Path(bundle_dir) / rel
        if not path.is_file():
            raise InvalidInputError(f"weights listed in metadata weights_sha256 are missing: {rel}", path)
        if file_sha256(path) != expected:
            raise InvalidInputError("weights differ from metadata weights_sha256 (run record_weights_sha256)", path)


# --- opening a bundle: the one way stages, evaluation, benchmarks and tests get at its parts ---


def find_bundle(bundle: str | os.PathLike) -> Path:
    """A bundle folder from a folder path (one with ``configs/metadata.json``) or a bundle name
    (found as `bundle_root` finds it)."""
    path = Path(bundle)
    if (path / "configs" / "metadata.json").is_file():
        return path.resolve()
    return Path(bundle_root(str(bundle)))


def _config_files(root: Path, config: str | Sequence[str]) -> list[Path]:
    """``configs/<name>.json`` for each name (``"inference"`` or ``"inference.json"``); a later
    file overrides an earlier one, as MONAI merges ``--config_file a,b``."""
    from mribundles.errors import InvalidInputError

    names = [config] if isinstance(config, str) else list(config)
    files = [root / "configs" / (name if name.endswith(".json") else f"{name}.json") for name in names]
    for file in files:
        if not file.is_file():
            raise InvalidInputError(f"no configs/{file.name} in the bundle", root)
    return files


def _defines(parser, id: str) -> bool:
    """Whether the parsed config holds ``id`` (``a#b`` for nested ones)."""
    try:
        return id in parser
    except TypeError:  # ``a#b`` where ``a`` is a string or a number: nothing to index
        return False


@dataclass
class Bundle:
    """An opened bundle (`open_bundle`): its folder, metadata and parsed config, and the parts a
    stage runs, as the bundle's own evaluator runs them: `preprocessing` (without the file
    loaders), the `inferer` with the `network`, `postprocessing` (without the writers).

    Parsing is lazy: nothing is instantiated until a part is asked for, and each part is
    instantiated once (the same objects on every call, so that an ``Invertd`` of the bundle
    recognises the operations its preprocessing recorded).
    """

    root: Path
    config_files: list[Path]
    metadata: dict
    parser: Any
    overrides: dict = field(default_factory=dict)
    _network: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.metadata.get("name") or self.root.name

    def defines(self, id: str) -> bool:
        return _defines(self.parser, id)

    def get(self, id: str):
        """The parsed (instantiated) content of config id ``id``."""
        return self.parser.get_parsed_content(id)

    @property
    def device(self):
        """The config's ``device`` as a ``torch.device`` (the command line gives a string); the
        CPU for a config without one."""
        import torch

        return torch.device(self.get("device")) if self.defines("device") else torch.device("cpu")

    def network(self):
        """The config's ``network`` with the ``ckpt_path`` weights (``weights_only=True``; a
        CheckpointSaver dict ``{"model": state_dict}`` is accepted too), in eval mode on the
        config's device. Loaded on the first call; later calls give the same module."""
        if self._network is None:
            self._network = _load_weights(self.get("network"), Path(self.get("ckpt_path")), self.config_files[0], self.device)
        return self._network

    @property
    def inferer(self):
        """The config's ``inferer`` (MONAI's ``SimpleInferer`` where it names none)."""
        from monai.inferers import SimpleInferer

        return self.get("inferer") if self.defines("inferer") else SimpleInferer()

    def preprocessing(self, without_loaders: bool = True):
        """The config's ``preprocessing`` Compose; ``without_loaders``: minus the transforms that
        read files (`loaders`), for data that is already in memory."""
        steps = self.get("preprocessing").transforms
        return _compose(steps, _loader_types(), keep=not without_loaders)

    def loaders(self):
        """The transforms of ``preprocessing`` that read files, as a Compose: a stage reads its
        own inputs (a k-space file, a template) with the bundle's own loader."""
        from monai.transforms import Compose

        return Compose([t for t in self.get("preprocessing").transforms if isinstance(t, _loader_types())])

    def postprocessing(self, without_writers: bool = True):
        """The config's ``postprocessing`` Compose (empty where it has none); ``without_writers``:
        minus the transforms that write or name output files."""
        from monai.transforms import Compose

        steps = self.get("postprocessing").transforms if self.defines("postprocessing") else []
        return Compose(steps) if not without_writers else _compose(steps, _writer_types(), keep=False)

    def infer(self, batch: dict) -> list[dict]:
        """One collated batch through the bundle's inference, as its ``SupervisedEvaluator`` runs
        it: ``prepare_batch`` (MONAI's default: ``image``) moves the inputs to the device, the
        inferer runs the network on them (no gradients), and each item of the batch, with its
        ``pred``, goes through the postprocessing without writers. Returns the items."""
        import torch
        from monai.data import decollate_batch
        from monai.engines.utils import PrepareBatchDefault

        prepare = self.get("prepare_batch") if self.defines("prepare_batch") else PrepareBatchDefault()
        postprocessing = self.postprocessing()
        with torch.no_grad():
            inputs, _, args, kwargs = prepare(batch, self.device)
            pred = self.inferer(inputs, self.network(), *args, **kwargs)
        return [postprocessing({**item, "pred": p}) for item, p in zip(decollate_batch(batch), decollate_batch(pred))]

    def with_settings(self, settings: dict) -> Bundle:
        """The same bundle with more config ids set for one run (checked as `open_bundle` checks
        overrides): sampling settings given per call, for example. It shares this bundle's
        network, loaded once, so ``settings`` must not be ids the network depends on."""
        opened = open_bundle(self.root, [f.name for f in self.config_files], {**self.overrides, **settings})
        opened._network = self._network
        return opened


def open_bundle(name_or_dir: str | os.PathLike, config: str | Sequence[str] = "inference", overrides: dict | None = None) -> Bundle:
    """Open a bundle: a folder, or a bundle name found as `bundle_root` finds it.

    ``config``: the config to parse (``"inference"``, ``"train"``...), or several, each
    overriding the one before (``["train", "evaluate"]``). ``overrides``: config ids to set
    (``"device"``, ``"network_def#chans"``...); an id the config does not define is refused,
    so that a misspelt setting never runs silently with the bundle's default.

    Raises:
        InvalidInputError: a missing config file, or an override id the config does not define
            (naming the bundle and the id).
        FileNotFoundError: no bundle of that name.
    """
    from monai.bundle import ConfigParser  # MONAI takes seconds to import

    from mribundles.errors import InvalidInputError

    root = find_bundle(name_or_dir)
    files = _config_files(root, config)
    metadata = read_metadata(root)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(root)
    overrides = dict(overrides or {})
    for id, value in overrides.items():
        if not _defines(parser, id):
            name = metadata.get("name") or root.name
            raise InvalidInputError(f"bundle {name} has no config id {id!r} to override (a misspelt setting?)", files[-1])
        parser[id] = value
    return Bundle(root, files, metadata, parser, overrides)


def open_recon_bundle(name_or_dir: str | os.PathLike, sampling: str = "cartesian", overrides: dict | None = None) -> Bundle:
    """A reconstruction bundle opened for one sampling, ``"cartesian"`` or ``"radial"``.

    A bundle with a ``sampling`` switch (ReconResNet: its network and weights depend on it) is
    told which; a bundle without one reconstructs Cartesian k-space only and is refused for
    radial.
    """
    from mribundles.errors import InvalidInputError

    bundle = open_bundle(name_or_dir, overrides=overrides)
    if bundle.defines("sampling"):
        return open_bundle(name_or_dir, overrides={**(overrides or {}), "sampling": sampling})
    if sampling != "cartesian":
        raise InvalidInputError(f"bundle {bundle.name} has no 'sampling' switch: it reconstructs Cartesian k-space only, "
                                f"not {sampling}", bundle.config_files[0])
    return bundle


def _load_weights(network, ckpt: Path, config_file: Path, device):
    """``network`` with the state dict of ``ckpt``, in eval mode on ``device``."""
    import torch

    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no trained weights (ckpt_path of {config_file})")
    state = torch.load(ckpt, map_location=device, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network.load_state_dict(state)
    return network.to(device).eval()


def _loader_types() -> tuple[type, ...]:
    """Transforms that read a file named in the data: a stage gets its data in memory."""
    from monai.transforms import LoadImaged

    from mribundles.transforms import LoadKspaced, LoadRadialKspaced, LoadVolumed

    return (LoadImaged, LoadKspaced, LoadRadialKspaced, LoadVolumed)


def _writer_types() -> tuple[type, ...]:
    """Transforms that write outputs, or name them for the writer (`NamePaird`)."""
    from monai.transforms import SaveImaged

    from mribundles.transforms import NamePaird

    return (SaveImaged, NamePaird)


def _compose(steps, kinds: tuple[type, ...], keep: bool):
    """A Compose of the bundle's own transform objects (not copies: an ``Invertd`` of the bundle
    still recognises the operations they record), minus those of ``kinds`` unless ``keep``."""
    from monai.transforms import Compose

    return Compose([t for t in steps if keep or not isinstance(t, kinds)])
