"""The shipped metadata schema (written from MONAI's mb_specification.rst) and its check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from mribundles.errors import InvalidInputError
from mribundles.sharing import SCHEMA_PATH, load_schema, verify_bundle_metadata

REPO_ROOT = Path(__file__).resolve().parents[1]

REQUIRED_TOP = [
    "version",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
]
REQUIRED_TENSOR = [
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "is_patch_data",
    "channel_def",
]


def valid_metadata() -> dict:
    """A complete metadata.json for an MRI reconstruction bundle, in the model zoo's style."""
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
        "version": "0.2.0",
        "changelog": {
            "0.2.0": "train on 8x as well as 4x acceleration",
            "0.1.0": "initial release",
            "0.1.0-rc.1": "release candidate",
        },
        "monai_version": "1.6.1",
        "pytorch_version": "2.4.0",
        "numpy_version": "1.26.4",
        "required_packages_version": {"nibabel": "5.2.1", "h5py": "3.11.0", "pytorch-ignite": "0.5.1"},
        "optional_packages_version": {"sigpy": "0.1.26"},
        "name": "Knee multi-coil reconstruction",
        "task": "Reconstruction of 2D knee MR slices from undersampled multi-coil k-space",
        "description": "An unrolled variational network that reconstructs a magnitude image from "
        "retrospectively undersampled multi-coil Cartesian k-space.",
        "authors": "mribundles contributors",
        "copyright": "Copyright (c) mribundles contributors",
        "data_source": "fastMRI knee multi-coil (https://fastmri.med.nyu.edu/)",
        "data_type": "hdf5",
        "image_classes": "complex multi-coil k-space, one channel per coil",
        "pred_classes": "single channel magnitude image, root-sum-of-squares scale",
        "eval_metrics": {"ssim": 0.91, "psnr": {"4x": 38.2, "8x": 35.0}},
        "intended_use": "Research only, not for diagnostic use",
        "references": ["Sriram A., et al. End-to-End Variational Networks for Accelerated MRI Reconstruction. MICCAI 2020."],
        "network_data_format": {
            "inputs": {
                "kspace": {
                    "type": "image",
                    "format": "kspace",
                    "modality": "MR",
                    "num_channels": 15,
                    "spatial_shape": ["*", "*"],
                    "dtype": "complex64",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "coil 0", "1": "coil 1"},
                },
                "mask": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 1,
                    "spatial_shape": [1, "16*n"],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "sampled k-space columns"},
                },
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "MR",
                    "num_channels": 1,
                    "spatial_shape": [320, 320],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "magnitude image"},
                }
            },
        },
        # bundles add keys of their own
        "weights_sha256": {"models/model.pt": "0" * 64},
    }


@pytest.fixture(scope="module")
def validator():
    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def errors(validator, instance) -> list:
    return list(validator.iter_errors(instance))


def write_bundle(root: Path, metadata) -> Path:
    (root / "configs").mkdir(parents=True)
    text = metadata if isinstance(metadata, str) else json.dumps(metadata, indent=2)
    (root / "configs" / "metadata.json").write_text(text)
    return root


def test_schema_file_is_a_valid_schema():
    schema = json.loads(SCHEMA_PATH.read_text())
    assert "mb_specification.rst" in schema["$comment"]
    assert sorted(schema["required"]) == sorted(REQUIRED_TOP)
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_valid_metadata_passes(validator):
    assert errors(validator, valid_metadata()) == []


def test_minimal_metadata_passes(validator):
    meta = {k: v for k, v in valid_metadata().items() if k in REQUIRED_TOP}
    assert errors(validator, meta) == []


@pytest.mark.parametrize("key", REQUIRED_TOP)
def test_missing_required_top_level_key_fails(validator, key):
    meta = valid_metadata()
    del meta[key]
    errs = errors(validator, meta)
    assert any(e.validator == "required" and f"'{key}'" in e.message for e in errs)


@pytest.mark.parametrize("key", REQUIRED_TENSOR)
@pytest.mark.parametrize("side", ["inputs", "outputs"])
def test_missing_tensor_field_fails(validator, key, side):
    meta = valid_metadata()
    name = next(iter(meta["network_data_format"][side]))
    del meta["network_data_format"][side][name][key]
    assert errors(validator, meta)


def test_modality_is_optional(validator):
    meta = valid_metadata()
    del meta["network_data_format"]["inputs"]["kspace"]["modality"]
    assert errors(validator, meta) == []


@pytest.mark.parametrize("side", ["inputs", "outputs"])
def test_network_data_format_without_inputs_or_outputs_fails(validator, side):
    meta = valid_metadata()
    del meta["network_data_format"][side]
    assert errors(validator, meta)
    meta["network_data_format"][side] = {}
    assert errors(validator, meta)


@pytest.mark.parametrize("bad", ["1.0", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-", "latest", "", 1])
def test_bad_model_version_fails(validator, bad):
    meta = valid_metadata()
    meta["version"] = bad
    assert errors(validator, meta)


@pytest.mark.parametrize("good", ["0.0.1", "1.2.3-rc.1", "1.2.3+build.5", "10.20.30"])
def test_semver_model_versions_pass(validator, good):
    meta = valid_metadata()
    meta["version"] = good
    meta["changelog"] = {good: "this version"}
    assert errors(validator, meta) == []


def test_bad_changelog_key_fails(validator):
    meta = valid_metadata()
    meta["changelog"]["next"] = "unreleased"
    assert errors(validator, meta)


@pytest.mark.parametrize("key", ["monai_version", "pytorch_version", "numpy_version"])
@pytest.mark.parametrize("bad", ["unknown", "1", "", "1.x"])
def test_bad_package_version_fails(validator, key, bad):
    meta = valid_metadata()
    meta[key] = bad
    assert errors(validator, meta)


@pytest.mark.parametrize("good", ["2.4.0+cu121", "1.5.0rc1", "1.26", "2.13.0.post1"])
def test_package_versions_with_suffix_pass(validator, good):
    meta = valid_metadata()
    meta["pytorch_version"] = good
    meta["required_packages_version"]["torch"] = good
    assert errors(validator, meta) == []


@pytest.mark.parametrize(
    "field, bad",
    [
        ("num_channels", "15"),
        ("num_channels", 0),
        ("spatial_shape", []),
        ("spatial_shape", [1, 2, 3, 4]),
        ("spatial_shape", [0, 320]),
        ("spatial_shape", ["", 320]),
        ("dtype", "float"),
        ("dtype", "torch.float32"),
        ("value_range", [0]),
        ("value_range", [0, 1, 2]),
        ("value_range", ["0", "1"]),
        ("is_patch_data", "false"),
        ("channel_def", {}),
        ("channel_def", {"first": "coil"}),
        ("channel_def", ["coil 0"]),
    ],
)
def test_bad_tensor_field_fails(validator, field, bad):
    meta = valid_metadata()
    meta["network_data_format"]["outputs"]["pred"][field] = bad
    assert errors(validator, meta)


@pytest.mark.parametrize(
    "key, bad",
    [
        ("changelog", ["0.1.0"]),
        ("references", "one reference"),
        ("eval_metrics", {"ssim": "high"}),
        ("required_packages_version", {"nibabel": 5}),
        ("required_packages_version", ["nibabel"]),
        ("authors", ""),
        ("task", None),
    ],
)
def test_bad_types_fail(validator, key, bad):
    meta = valid_metadata()
    meta[key] = bad
    assert errors(validator, meta)


def test_verify_bundle_metadata_accepts_valid(tmp_path):
    bundle = write_bundle(tmp_path / "b", valid_metadata())
    assert verify_bundle_metadata(bundle) == bundle / "configs" / "metadata.json"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda m: m.pop("copyright"), "missing required key 'copyright'"),
        (lambda m: m["network_data_format"].pop("inputs"), "missing required key 'network_data_format/inputs'"),
        (
            lambda m: m["network_data_format"]["outputs"]["pred"].pop("dtype"),
            "missing required key 'network_data_format/outputs/pred/dtype'",
        ),
        (lambda m: m.update(version="1.0"), "invalid value for key 'version'"),
        (lambda m: m.pop("schema"), "missing required key 'schema'"),
    ],
    ids=["top-level", "inputs", "tensor-field", "version", "schema"],
)
def test_verify_bundle_metadata_names_failing_key(tmp_path, mutate, expected):
    meta = valid_metadata()
    mutate(meta)
    bundle = write_bundle(tmp_path / "b", meta)
    with pytest.raises(InvalidInputError) as info:
        verify_bundle_metadata(bundle)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert info.value.path == str(bundle / "configs" / "metadata.json")


def test_verify_bundle_metadata_bad_files(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        verify_bundle_metadata(tmp_path)
    bundle = write_bundle(tmp_path / "b", "{not json")
    with pytest.raises(InvalidInputError, match="cannot read JSON"):
        verify_bundle_metadata(bundle)


def test_monai_cli_verifies_offline(tmp_path):
    """`python -m monai.bundle verify_metadata` with our schema exits 0 and downloads nothing.

    (Rejection of invalid files through MONAI is covered by the verify_bundle_metadata tests, which
    call the same function in-process; one subprocess is enough, it mostly spends its time
    importing MONAI.)
    """
    bundle = write_bundle(tmp_path / "b", valid_metadata())
    env = dict(os.environ)
    # any download attempt would go through a proxy that refuses connections
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[var] = "http://127.0.0.1:9"
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    proc = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "verify_metadata",
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--filepath", str(SCHEMA_PATH),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "skipped downloading" in proc.stdout
    assert "verified with no error" in proc.stdout


BUNDLE_METADATA = sorted(REPO_ROOT.glob("bundles/*/configs/metadata.json"))


@pytest.mark.parametrize(
    "meta_file", BUNDLE_METADATA, ids=[str(p.relative_to(REPO_ROOT)) for p in BUNDLE_METADATA]
)
def test_every_bundle_metadata_is_valid(meta_file):
    verify_bundle_metadata(meta_file.parents[1])
