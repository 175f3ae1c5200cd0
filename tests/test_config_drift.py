"""Configs that are meant to be the same in several bundles stay the same, and the bundles' configs
hold few ``$`` expressions (code that ``mribundles review`` lists for a receiving site to read).

Each bundle ships its own copy of these files, so that `mribundles pack` gets a self-contained
bundle; this module is what keeps the copies from drifting apart. The named steps the configs
call instead of ``$`` code (`mribundles.configs`, `mribundles.distributed`) are tested here too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mribundles import configs, distributed
from mribundles.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
ALL_BUNDLES = sorted(p.name for p in BUNDLES.iterdir() if p.is_dir())
RECON = ["brain_mri_recon_varnet", "brain_mri_recon_rvn", "brain_mri_recon_unet", "brain_mri_recon_reconresnet"]
TRAINED = [*RECON, "brain_mri_sr", "brain_mri_reg_voxelmorph", "brain_mri_tissue_seg", "brain_mri_recon_seg"]

# Files that are byte-identical in every bundle of a group.
IDENTICAL = {
    "logging.conf": ALL_BUNDLES,
    # an epoch is one pass over the data: DistributedSampler shards training and validation
    "multi_gpu_train.json (epochs pass over the data)": RECON,
    # an epoch is a number of iterations (`distributed.iteration_sampler` shares them out)
    "multi_gpu_train.json (epochs of iterations)": ["brain_mri_sr", "brain_mri_reg_voxelmorph", "brain_mri_tissue_seg"],
    "multi_gpu_inference.json": ["brain_mri_pipeline", "brain_mri_recon_seg"],
}

# Pairs of configs that differ only in the listed ids (a listed id covers everything under it).
SAME_BUT = [
    # the two engine-trained reconstruction bundles: same data, masks, loss and schedule
    ("brain_mri_recon_varnet", "brain_mri_recon_rvn", "train.json", {"bundle_root#name", "network_def", "experiment_name"}),
    # the slab fine-tune has no validation, so no validation handlers to keep off ranks > 0, and
    # it starts from its stage bundles' weights, so it takes no --init_weights
    ("brain_mri_sr", "brain_mri_recon_seg", "multi_gpu_train.json",
     {"validate#rank_handlers", "validate#evaluator#val_handlers", "initialize#4"}),
]

MAX_EXPRESSIONS = 265  # issue 18: at most half of the 531 the configs held when it was filed


def _file(bundle: str, name: str) -> Path:
    return BUNDLES / bundle / "configs" / name.split(" ")[0]


def flatten(node, prefix: str = "") -> dict[str, object]:
    """``{"a#b#0": value}`` for every leaf of a parsed config, ids as MONAI writes them."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return {prefix: node}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}#{key}" if prefix else str(key)))
    if not flat:  # an empty list or dict is a value too
        flat[prefix] = node
    return flat


def expressions(node) -> list[str]:
    """Every string starting with ``$`` in a parsed config, at any depth."""
    return [v for v in flatten(node).values() if isinstance(v, str) and v.startswith("$")]


def _under(id: str, allowed: set[str]) -> bool:
    return any(id == a or id.startswith(a + "#") for a in allowed)


@pytest.mark.parametrize("group", list(IDENTICAL))
def test_files_meant_to_be_identical_are_byte_identical(group):
    bundles = IDENTICAL[group]
    reference = _file(bundles[0], group).read_bytes()
    drifted = [b for b in bundles[1:] if _file(b, group).read_bytes() != reference]
    assert drifted == [], f"{group} of {drifted} differs from {bundles[0]}'s: copy the change to every bundle of the group"


@pytest.mark.parametrize("first, second, name, allowed", SAME_BUT, ids=[f"{a}-{b}-{n}" for a, b, n, _ in SAME_BUT])
def test_configs_meant_to_differ_in_a_few_ids_differ_in_no_other(first, second, name, allowed):
    a = flatten(json.loads(_file(first, name).read_text()))
    b = flatten(json.loads(_file(second, name).read_text()))
    differing = {id for id in a.keys() | b.keys() if a.get(id, "<missing>") != b.get(id, "<missing>")}
    assert sorted(id for id in differing if not _under(id, allowed)) == []
    assert all(any(_under(id, {x}) for id in differing) for x in allowed), "an allowed difference is gone: shrink the list"


def test_the_drift_groups_name_real_files_and_the_flattening_sees_values():
    assert all(_file(b, g).is_file() for g, bundles in IDENTICAL.items() for b in bundles)
    assert flatten({"a": {"b": [1, {"c": []}]}}) == {"a#b#0": 1, "a#b#1#c": []}


@pytest.mark.parametrize("bundle", [b for b in TRAINED if _file(b, "multi_gpu_train.json").is_file()])
def test_the_multi_gpu_overlay_loads_every_checkpoint_train_json_loads(bundle):
    """The overlay replaces ``initialize`` whole (it must start the process group first), so a
    loading step added to train.json and not to the overlay is silently skipped under torchrun:
    ``--init_weights`` was, in every bundle, until this test."""
    def loads(name: str) -> list[tuple]:
        steps = json.loads(_file(bundle, name).read_text())["initialize"]
        return [(s["load_path"], json.dumps(s["load_dict"])) for s in steps if s["_target_"] == "mribundles.configs.load_checkpoint"]

    assert loads("train.json") and loads("multi_gpu_train.json") == loads("train.json")


@pytest.mark.parametrize("bundle", TRAINED)
def test_every_training_reports_progress_with_one_handler_definition(bundle):
    """RunReport first in train#handlers (before StatsHandler, which logs tracebacks), off with
    ``--quiet true``, listing the checkpoints (output_dir) and the weights (ckpt_dir) it wrote."""
    train = json.loads(_file(bundle, "train.json").read_text())
    first = train["train"]["handlers"][0]
    assert train["quiet"] is False
    assert {k: v for k, v in first.items() if k != "unit"} == {
        "_target_": "mribundles.handlers.RunReport", "output_dir": "@output_dir", "quiet": "@quiet", "extra_dirs": ["@ckpt_dir"]}


def test_the_bundles_hold_at_most_half_the_expressions_they_did():
    found = {str(f.relative_to(BUNDLES)): expressions(json.loads(f.read_text())) for f in sorted(BUNDLES.glob("*/configs/*.json"))}
    total = sum(len(e) for e in found.values())
    assert total <= MAX_EXPRESSIONS, f"{total} $ expressions; the most: " + ", ".join(
        f"{f} {len(e)}" for f, e in sorted(found.items(), key=lambda kv: -len(kv[1]))[:5])


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_every_config_a_run_starts_from_imports_the_library_first(bundle):
    """``$import mribundles`` is the one import a config needs without naming the library in an
    expression: MONAI runs it when it first parses the config, before its own checks of the
    command line (``--tracking`` makes the output folder), and that import installs the hook
    that reports refused input in one line (`mribundles.errors.install_excepthook`)."""
    for name in ("inference.json", "train.json"):
        if _file(bundle, name).is_file():
            assert json.loads(_file(bundle, name).read_text())["imports"][0] == "$import mribundles", name


def test_expressions_that_name_the_library_import_it():
    """MONAI binds ``$import mribundles.chains`` to the name ``mribundles.chains`` only: an
    expression that says ``mribundles.chains.X`` needs ``$import mribundles`` as well, and a
    submodule that ``import mribundles`` does not load needs its own import."""
    import re
    import subprocess
    import sys

    # the submodules that `import mribundles` itself loads, in a process that has imported nothing else
    listed = subprocess.run([sys.executable, "-c", "import mribundles; print(*vars(mribundles))"], capture_output=True,
                            text=True, check=True, timeout=300)
    loaded = set(listed.stdout.split())
    for file in sorted(BUNDLES.glob("*/configs/*.json")):
        config = json.loads(file.read_text())
        imports = config.get("imports", []) + config.get("+imports", [])
        code = " ".join(e for e in expressions({k: v for k, v in config.items() if k not in ("imports", "+imports")}))
        for submodule in set(re.findall(r"\bmribundles\.(\w+)", code)):
            assert "$import mribundles" in imports, file
            assert submodule in loaded or f"$import mribundles.{submodule}" in imports, (file, submodule)


def test_the_reconresnet_configs_name_their_sampling_once_per_choice():
    """ReconResNet's two samplings are chosen by `configs.for_sampling`, never by ``$`` code."""
    for name in ("inference.json", "train.json", "evaluate.json"):
        text = _file("brain_mri_recon_reconresnet", name).read_text()
        assert "@sampling ==" not in text and "@sampling +" not in text, name


# --- the named steps ---------------------------------------------------------------------------


def test_path_joins_as_text_as_the_configs_did():
    assert configs.path("bundles/x", "models/model.pt") == "bundles/x" + "/models/model.pt"
    assert configs.path("./b", "../../data/generated") == "./b/../../data/generated"
    assert configs.path(Path("/a"), "eval") == "/a/eval"


def test_for_sampling_picks_one_and_refuses_a_misspelt_sampling():
    assert configs.for_sampling("radial", 1, 2) == 1 and configs.for_sampling("cartesian", 1, 2) == 2
    with pytest.raises(InvalidInputError, match="sampling must be one of radial, cartesian, not 'Cartesian'"):
        configs.for_sampling("Cartesian", 1, 2)


def test_sampling_label_names_masks_spokes_and_their_choices():
    from monai.transforms import OneOf

    from mribundles.transforms import SelectSpokesd, UndersampleKspaced

    random4 = UndersampleKspaced("kspace", kind="random1d", acceleration=4, center_fraction=0.08)
    poisson = UndersampleKspaced("kspace", kind="poisson2d", acceleration=7.5, center_fraction=0.1)
    assert configs.sampling_label(random4) == "random1d 4x"
    assert configs.sampling_label(SelectSpokesd("kspace", spokes=32)) == "32 spokes"
    assert configs.sampling_label(OneOf([random4, poisson])) == "random1d 4x, poisson2d 7.5x"


def test_concat_run_attach_and_a_checkpoint_that_is_not_given():
    from ignite.engine import Engine, Events

    assert configs.concat([[1, 2], [3], []]) == [1, 2, 3]
    seen = []

    class Handler:
        def attach(self, engine):
            engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))

    engine = Engine(lambda engine, batch: batch)
    configs.attach(engine, [Handler()])
    configs.load_checkpoint(engine, None, {"model": torch.nn.Linear(1, 1)})  # no resume_from: nothing attached
    configs.run(engine, [0, 0, 0])
    assert seen == [1, 2, 3]


def test_outside_torchrun_the_distributed_steps_are_those_of_one_process():
    from monai.handlers import StatsHandler

    handlers = [StatsHandler(), object()]
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.rank_handlers(handlers) == handlers
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    sampler = distributed.iteration_sampler(list(range(5)), iterations=7, batch_size=2)
    assert len(sampler) == 14 and sampler.replacement
    assert distributed.local_device() == (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu"))


def test_on_ranks_above_zero_only_quiet_handlers_run(monkeypatch):
    from monai.handlers import CheckpointSaver, StatsHandler

    class Quiet:
        pass

    saver = CheckpointSaver.__new__(CheckpointSaver)  # the type is what counts, not a folder
    handlers = [StatsHandler(), saver, Quiet()]
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert [type(h) for h in distributed.rank_handlers(handlers)] == [Quiet]
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert len(distributed.iteration_sampler(list(range(4)), iterations=10, batch_size=2)) == 3 * 2
