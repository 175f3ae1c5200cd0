"""The code policy for received bundles, tried as an attacker would.

Each walk-around is put into an unsigned bundle that has no other code: `review` must list it and
`install` (no trusted key, no --allow-code) must refuse it and leave nothing behind. The shipped
bundles must pass with nothing flagged but their `$` expressions.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from pathlib import Path

import pytest

from bundle_checks import REPO
from mribundles.cli import main
from mribundles.errors import InvalidInputError
from mribundles.sharing.install import install_bundle
from mribundles.sharing.package import open_package, pack_bundle
from mribundles.sharing.policy import (
    ALLOWED_TARGETS,
    STANDARD_LOGGING_CONF,
    allowed_objects,
    config_targets,
    logging_differences,
    target_problem,
)
from mribundles.sharing.review import review_bundle

BUNDLES = sorted(p for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
WEIGHTS = b"tiny weights"


def tiny_bundle(root: Path, inference: dict, name: str = "tiny_bundle") -> Path:
    """A valid bundle with no code: the unet bundle's metadata (renamed), a standard logging.conf,
    12 bytes of 'weights' with their hash, and ``inference`` as configs/inference.json."""
    bundle = root / name
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    meta = json.loads((REPO / "bundles" / "brain_mri_recon_unet" / "configs" / "metadata.json").read_text())
    meta["name"] = name
    meta["weights_sha256"] = {"models/model.pt": hashlib.sha256(WEIGHTS).hexdigest()}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4))
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference, indent=4))
    (bundle / "configs" / "logging.conf").write_text(STANDARD_LOGGING_CONF)
    (bundle / "models" / "model.pt").write_bytes(WEIGHTS)
    return bundle


def refused_by_install(bundle: Path, tmp_path: Path) -> str:
    """Pack ``bundle`` unsigned, check that install refuses it on the code policy and leaves
    nothing; return the one-line message."""
    zip_path = pack_bundle(bundle, tmp_path / "zips")
    dest = tmp_path / "site_b"
    with pytest.raises(InvalidInputError, match="no trusted key signed it") as info:
        install_bundle(zip_path, dest)
    message = str(info.value)
    assert message.startswith(str(zip_path)) and "\n" not in message
    assert not dest.exists(), "a refused install left files behind"
    return message


def only_finding(bundle: Path):
    (finding,) = review_bundle(bundle)
    return finding


# --- the attacks are real: MONAI runs them from a config with no `$` in it ------------------


def test_monai_runs_a_reexported_os_system_and_a_bare_open(tmp_path):
    """Why a prefix allow-list is no policy: both are `_target_`s MONAI instantiates as written."""
    from monai.bundle import ConfigParser

    marker, victim = tmp_path / "marker", tmp_path / "victim.txt"
    victim.write_text("precious")
    parser = ConfigParser({
        "shell": {"_target_": "torch.os.system", "command": f"touch {marker}"},
        "truncate": {"_target_": "open", "file": str(victim), "mode": "w"},
    })
    assert parser.get_parsed_content("shell") == 0 and marker.is_file()
    parser.get_parsed_content("truncate").close()
    assert victim.read_text() == ""
    assert target_problem("torch.os.system").startswith("_target_ not on the allowed list")
    assert "it is posix.system" in target_problem("torch.os.system")
    assert target_problem("open") is not None


def test_trailing_space_and_other_casing_do_not_resolve_in_monai_and_are_refused():
    from monai.bundle import ConfigParser

    for name in ("Compose ", "compose", "COMPOSE", " Compose"):
        with pytest.raises(Exception):
            ConfigParser({"x": {"_target_": name, "transforms": []}}).get_parsed_content("x")
        assert target_problem(name) == "_target_ not on the allowed list", name
    assert target_problem("Compose") is None


# --- every walk-around, in an unsigned bundle with no other code ------------------------------

REEXPORTS = [
    "torch.os.system",
    "monai.utils.module.os.system",
    "monai.apps.utils.os.system",
    "mlflow.utils.file_utils.os.system",
    "mlflow.utils.process.subprocess.Popen",
    "numpy._core.numeric.builtins.open",
    "monai.utils.misc.subprocess.run",
    "monai.apps.utils.shutil.rmtree",
    "torch.serialization.pickle.load",
    "numpy.lib._npyio_impl.pickle.load",
]
BUILTINS = ["open", "eval", "exec", "getattr", "__import__", "builtins.open", "builtins.eval"]
LOADERS_AND_SHELLS = [
    "torch.hub.load", "torch.load", "pickle.load", "pickle.loads", "numpy.load",
    "subprocess.run", "subprocess.Popen", "os.system", "shutil.rmtree",
    "load",  # a MONAI short name: its component locator resolves it to monai.bundle.scripts.load
]


def test_the_reexports_really_reach_the_dangerous_callables():
    """The names above exist in the installed packages and reach what they seem to (numpy 2 has no
    numpy.os; mlflow.utils.os is mlflow's module, so its re-exports are found elsewhere)."""
    import os
    import pickle
    import shutil as shutil_module
    import subprocess

    import mlflow.utils.file_utils
    import mlflow.utils.process
    import monai.apps.utils
    import monai.utils.misc
    import numpy
    import torch

    assert torch.os.system is os.system and monai.apps.utils.os.system is os.system
    assert mlflow.utils.file_utils.os.system is os.system and not hasattr(numpy, "os")
    assert mlflow.utils.process.subprocess.Popen is subprocess.Popen
    assert not hasattr(mlflow.utils.os, "system")  # mlflow.utils.os is mlflow's own module, not os
    assert monai.utils.misc.subprocess.run is subprocess.run
    assert monai.apps.utils.shutil.rmtree is shutil_module.rmtree
    assert torch.serialization.pickle.load is pickle.load


@pytest.mark.parametrize("target", REEXPORTS + BUILTINS + LOADERS_AND_SHELLS)
def test_a_target_off_the_list_is_listed_and_refused(target, tmp_path):
    bundle = tiny_bundle(tmp_path, {"bundle_root": ".", "attack": {"_target_": target, "command": "true"}})
    finding = only_finding(bundle)
    assert (finding.file, finding.key, finding.kind, finding.text) == ("configs/inference.json", "attack#_target_", "target", target)
    assert finding.why.startswith("_target_ not on the allowed list")
    message = refused_by_install(bundle, tmp_path)
    assert f"configs/inference.json:attack#_target_: {target}" in message
    assert "0 $ expressions, 1 _target_" in message


NESTED_AND_INDIRECT = {
    # name: (inference.json, key of the finding, kind, text)
    "nested_list_and_dict": (
        {"handlers": [{"_target_": "StatsHandler"}, {"deep": {"more": [{"_target_": "torch.os.system", "command": "true"}]}}]},
        "handlers#1#deep#more#0#_target_", "target", "torch.os.system"),
    "target_set_by_a_key_path": (
        {"network_def": {"_target_": "UNet"}, "network_def#_target_": "torch.os.system"},
        "network_def#_target_", "target", "torch.os.system"),
    "target_set_by_a_double_colon_key_path": (
        {"network_def::_target_": "subprocess.run"}, "network_def::_target_", "target", "subprocess.run"),
    "target_merged_in_with_plus": (
        {"+network_def": {"_target_": "torch.load", "f": "models/model.pt"}}, "+network_def#_target_", "target", "torch.load"),
    "target_as_an_at_reference": (
        {"name": "torch.os.system", "attack": {"_target_": "@name", "command": "true"}}, "attack#_target_", "target", "@name"),
    "target_as_a_macro_of_this_file": (
        {"name": "torch.os.system", "attack": {"_target_": "%#name", "command": "true"}}, "attack#_target_", "target", "%#name"),
    "target_as_a_macro_of_another_file": (
        {"attack": {"_target_": "%../../evil.json#name"}}, "attack#_target_", "target", "%../../evil.json#name"),
    "target_as_an_expression": (
        {"attack": {"_target_": "$__import__('os').system"}}, "attack#_target_", "target", "$__import__('os').system"),
    "target_built_by_another_component": (
        {"attack": {"_target_": {"_target_": "Compose", "transforms": []}}}, "attack#_target_", "target",
        "{'_target_': 'Compose', 'transforms': []}"),
    "debug_mode": ({"net": {"_target_": "UNet", "_mode_": "debug"}}, "net#_mode_", "target", "debug"),
    "macro_from_another_file": (
        {"network_def": "%../../../shared/evil.json#network_def"}, "network_def", "reference", "%../../../shared/evil.json#network_def"),
    "reference_to_an_id_no_config_defines": ({"network": "@network_from_elsewhere"}, "network", "reference", "@network_from_elsewhere"),
}


@pytest.mark.parametrize("case", sorted(NESTED_AND_INDIRECT))
def test_nested_and_indirect_targets_and_references_are_listed_and_refused(case, tmp_path):
    inference, key, kind, text = NESTED_AND_INDIRECT[case]
    bundle = tiny_bundle(tmp_path, inference)
    finding = only_finding(bundle)
    assert (finding.file, finding.key, finding.kind, finding.text) == ("configs/inference.json", key, kind, text)
    refused_by_install(bundle, tmp_path)


def test_references_inside_the_bundle_and_allowed_targets_pass(tmp_path):
    """Overlay-style references to ids of another config of the bundle, a macro of this file, and
    allowed targets under their MONAI short name, full path and another path to the same class."""
    bundle = tiny_bundle(tmp_path, {
        "bundle_root": ".",
        "network_def": {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1,
                        "channels": [4, 8], "strides": [2]},
        "copy": "%#network_def",
        "relative": {"a": 1, "b": "@##bundle_root"},
        "optimizer": {"_target_": "torch.optim.adam.Adam", "_mode_": "callable"},
        "pre": {"_target_": "monai.transforms.Compose", "transforms": []},
        "version": "@_meta_#version",
    })
    (bundle / "configs" / "evaluate.json").write_text(json.dumps({"validate#handlers": ["@network_def", "@bundle_root"]}))
    assert review_bundle(bundle) == []
    folder = install_bundle(pack_bundle(bundle, tmp_path / "zips"), tmp_path / "site_b")
    assert (folder / "configs" / "evaluate.json").is_file()


def test_yaml_configs_and_a_bundle_hidden_in_docs_are_reviewed(tmp_path):
    """MONAI loads .YAML in any letter case; a chain stage opens any bundle folder it is given."""
    bundle = tiny_bundle(tmp_path, {"bundle_root": "."})
    (bundle / "configs" / "extra.YAML").write_text("attack:\n  _target_: subprocess.Popen\n  args: [true]\n")
    inner = bundle / "docs" / "inner" / "configs"
    inner.mkdir(parents=True)
    (inner / "inference.json").write_text(json.dumps({"net": {"_target_": "torch.hub.load"}}))
    findings = review_bundle(bundle)
    assert [(f.file, f.key, f.text) for f in findings] == [
        ("configs/extra.YAML", "attack#_target_", "subprocess.Popen"),
        ("docs/inner/configs/inference.json", "net#_target_", "torch.hub.load"),
    ]
    refused_by_install(bundle, tmp_path)


# --- logging.conf ---------------------------------------------------------------------------

LOGGING_ATTACKS = {
    # a FileHandler with plain literal args truncates any file the user can write
    "file_handler_literal_args": ("class=StreamHandler", "class=FileHandler", "args=(sys.stdout,)", "args=('/tmp/victim', 'w')"),
    "args_that_call": ("args=(sys.stdout,)", "args=(__import__('os').system('true'),)"),
    "class_outside_logging": ("class=StreamHandler", "class=os.system"),
}


@pytest.mark.parametrize("case", sorted(LOGGING_ATTACKS))
def test_a_logging_conf_other_than_the_standard_is_listed_and_refused(case, tmp_path):
    edits = LOGGING_ATTACKS[case]
    text = STANDARD_LOGGING_CONF
    for old, new in zip(edits[::2], edits[1::2]):
        assert old in text
        text = text.replace(old, new)
    bundle = tiny_bundle(tmp_path, {"bundle_root": "."})
    (bundle / "configs" / "logging.conf").write_text(text)
    findings = review_bundle(bundle)
    assert findings and {(f.file, f.kind) for f in findings} == {("configs/logging.conf", "logging")}
    assert {(f.key, f.text) for f in findings} == {
        (f"[handler_consoleHandler] {new.split('=', 1)[0]}", new.split("=", 1)[1]) for new in edits[1::2]
    }
    refused_by_install(bundle, tmp_path)


def test_monais_own_logging_guard_lets_a_truncating_file_handler_through(tmp_path):
    """Why a literal-only rule is not enough: MONAI 1.6.1 checks `class` and `args`, and this passes."""
    import io
    import logging.config

    from monai.bundle.workflows import _reject_executable_logging_config

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    text = STANDARD_LOGGING_CONF.replace("class=StreamHandler", "class=FileHandler").replace(
        "args=(sys.stdout,)", f"args=({str(victim)!r}, 'w')")
    (tmp_path / "logging.conf").write_text(text)
    assert _reject_executable_logging_config(str(tmp_path / "logging.conf")) == text
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    try:
        logging.config.fileConfig(io.StringIO(text), disable_existing_loggers=False)
        assert victim.read_text() == ""
    finally:  # put the test run's logging back
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = root_handlers, root_level
    assert [where for where, _ in logging_differences(text)] == ["[handler_consoleHandler] args", "[handler_consoleHandler] class"]


def test_logging_conf_compared_as_parsed_not_as_bytes():
    reformatted = "# our logging\r\n" + STANDARD_LOGGING_CONF.replace("\n", "\r\n").replace("level=INFO", "level = INFO")
    assert logging_differences(reformatted) == []
    ((where, problem),) = logging_differences("[loggers\nkeys=root")
    assert where == "<file>" and problem.startswith("cannot parse: File contains no section headers")
    assert logging_differences(STANDARD_LOGGING_CONF.replace("level=INFO\nhandlers", "level=DEBUG\nhandlers")) == [
        ("[logger_root] level", "DEBUG")
    ]


# --- the list itself and the shipped bundles --------------------------------------------------


def test_the_list_covers_every_shipped_target_and_names_only_classes_and_functions():
    shipped = config_targets(BUNDLES)
    assert len(shipped) > 90
    assert shipped <= set(ALLOWED_TARGETS), sorted(shipped - set(ALLOWED_TARGETS))
    assert len(set(ALLOWED_TARGETS)) == len(ALLOWED_TARGETS) == len(allowed_objects())
    assert all(isinstance(obj, type) or inspect.isfunction(obj) for _, obj in allowed_objects().values())
    assert all(name.split(".")[0] in ("monai", "torch", "mribundles") for name in ALLOWED_TARGETS)


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_shipped_bundles_pass_with_only_their_expressions_flagged(bundle):
    findings = review_bundle(bundle)
    assert [f for f in findings if f.kind != "expression"] == []
    assert findings  # their `$` expressions (output_dir, at least) stay code: an unsigned copy is refused
    assert (bundle / "configs" / "logging.conf").read_text() == STANDARD_LOGGING_CONF


def test_an_unsigned_shipped_bundle_is_refused_for_its_expressions_only(tmp_path, capsys):
    zip_path = pack_bundle(REPO / "bundles" / "brain_mri_recon_unet", tmp_path)
    with pytest.raises(InvalidInputError, match=r"\(6 \$ expressions, 0 _target_/_mode_ values outside the allowed list, "
                                                r"0 references to config outside the bundle, 0 logging.conf settings"):
        install_bundle(zip_path, tmp_path / "site_b")
    assert main(["review", str(zip_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("6 $ expressions, 0 _target_") and len(out) == 7
    assert len(review_bundle(open_package(zip_path))) == 6


def test_cli_install_turns_a_refusal_into_one_error_line(tmp_path, capsys):
    bundle = tiny_bundle(tmp_path, {"attack": {"_target_": "torch.os.system", "command": "true"}})
    zip_path = pack_bundle(bundle, tmp_path / "zips")
    assert main(["install", str(zip_path), "--to", str(tmp_path / "site_b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {zip_path}: bundle runs code outside the policy") and err.count("\n") == 1
    assert main(["install", str(zip_path), "--to", str(tmp_path / "site_b"), "--allow-code"]) == 0
    assert (tmp_path / "site_b" / "tiny_bundle" / "configs" / "inference.json").is_file()
    shutil.rmtree(tmp_path / "site_b")
