"""Every reconstruction bundle: metadata, weights and each config run on tiny data.

Parametrized by bundle, so each test id (and each failure) names its bundle, model-zoo style.
"""

from __future__ import annotations

import json

import pytest

from bundle_checks import (
    REPO,
    check_bad_input_fails_with_one_line,
    check_inference_on_shipped_brain,
    check_inference_retrospective,
    check_metadata,
    check_multi_process_train,
    check_torchscript_export,
    check_tracked_inference,
    check_train_and_evaluate,
    check_unsafe_weights_refused,
    check_weights,
)

RECON_BUNDLES = ["brain_mri_recon_varnet", "brain_mri_recon_rvn", "brain_mri_recon_unet"]
BUNDLES = [pytest.param(REPO / "bundles" / name, id=name) for name in RECON_BUNDLES]
# Bundles whose train.json draws from the training data engine (mribundles.synth) as well as from
# k-space files: their tests point it at the shipped label map, two small examples per epoch
# beside the tiny dataset's two training slices.
ENGINE_TRAINED = {"brain_mri_recon_varnet", "brain_mri_recon_rvn"}
SMALL_ACQUISITIONS = {"coils": [4], "phase_encodes": [48, 64], "max_pixels": 64 * 64}


def engine_override(bundle, synth_root) -> dict:
    if bundle.name not in ENGINE_TRAINED:
        return {}
    return {"synth_data_root": str(synth_root), "examples_per_epoch": 2, "synth_acquisition": SMALL_ACQUISITIONS}


# Bundles with a test module of their own.
TESTED_ELSEWHERE = {
    "brain_mri_tissue_seg": "tests/test_seg_bundle.py",
    "brain_mri_recon_seg": "tests/test_chain_bundle.py",
    "brain_mri_recon_reconresnet": "tests/test_reconresnet_bundle.py",
    "brain_mri_reg_voxelmorph": "tests/test_reg_bundle.py",
    "brain_mri_sr": "tests/test_sr_bundle.py",
    "brain_mri_pipeline": "tests/test_pipeline_bundle.py",
}


def test_every_bundle_folder_is_tested():
    """A bundle added without joining a test list would ship untested."""
    folders = sorted(p.name for p in (REPO / "bundles").iterdir() if p.is_dir())
    assert folders == sorted(RECON_BUNDLES + list(TESTED_ELSEWHERE))
    assert all((REPO / module).is_file() for module in TESTED_ELSEWHERE.values())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_valid_against_shipped_schema(bundle):
    check_metadata(bundle)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_shipped_weights_load_into_network(bundle):
    check_weights(bundle)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_one_epoch_then_evaluate(bundle, tiny_recon_dataset, tiny_synth_root, tmp_path):
    override = engine_override(bundle, tiny_synth_root)
    check_train_and_evaluate(bundle, tiny_recon_dataset, tmp_path, override, iterations=2 + override.get("examples_per_epoch", 0))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_runs_on_shipped_real_brain(bundle, tmp_path):
    check_inference_on_shipped_brain(bundle, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_with_overridden_file_and_mask(bundle, tiny_recon_dataset, tmp_path):
    check_inference_retrospective(bundle, tiny_recon_dataset, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_multi_gpu_overlay_trains_with_two_processes(bundle, tiny_recon_dataset, tiny_synth_root, tmp_path):
    override = engine_override(bundle, tiny_synth_root)
    extra = [arg for key, value in override.items() for arg in (f"--{key}", json.dumps(value))]
    # Two ranks share the epoch's items: the two training slices and the engine's examples.
    check_multi_process_train(bundle, tiny_recon_dataset, tmp_path, *extra,
                              iterations_per_rank=(2 + override.get("examples_per_epoch", 0)) // 2)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bad_input_fails_with_one_line_naming_the_file(bundle, tmp_path):
    check_bad_input_fails_with_one_line(bundle, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_tracked_inference_logs_lineage_to_mlflow(bundle, tiny_recon_dataset, tmp_path):
    check_tracked_inference(bundle, tiny_recon_dataset, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchscript_export_matches_eager(bundle, tmp_path):
    check_torchscript_export(bundle, tmp_path)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_weights_that_run_code_are_refused(bundle, tmp_path):
    check_unsafe_weights_refused(bundle, tmp_path)
