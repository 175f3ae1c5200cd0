"""Bundle brain_mri_recon_unet: metadata, weights and every config run on tiny data."""

from __future__ import annotations

import pytest

from bundle_checks import (
    REPO,
    check_bad_input_fails_with_one_line,
    check_inference_on_shipped_brain,
    check_inference_retrospective,
    check_metadata,
    check_multi_process_train,
    check_train_and_evaluate,
    check_weights,
)

BUNDLE = REPO / "bundles" / "brain_mri_recon_unet"


def test_metadata_valid_against_shipped_schema():
    check_metadata(BUNDLE)


def test_shipped_weights_load_into_network():
    check_weights(BUNDLE)


def test_train_one_epoch_then_evaluate(tiny_recon_dataset, tmp_path):
    check_train_and_evaluate(BUNDLE, tiny_recon_dataset, tmp_path)


def test_inference_runs_on_shipped_real_brain(tmp_path):
    check_inference_on_shipped_brain(BUNDLE, tmp_path)


def test_inference_with_overridden_file_and_mask(tiny_recon_dataset, tmp_path):
    check_inference_retrospective(BUNDLE, tiny_recon_dataset, tmp_path)


def test_multi_gpu_overlay_trains_with_two_processes(tiny_recon_dataset, tmp_path):
    check_multi_process_train(BUNDLE, tiny_recon_dataset, tmp_path)


def test_bad_input_fails_with_one_line_naming_the_file(tmp_path):
    check_bad_input_fails_with_one_line(BUNDLE, tmp_path)
