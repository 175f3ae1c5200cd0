"""Raw scanner data in: Siemens twix (.dat), ISMRMRD HDF5 and BART's 1 x ky x kz x coil layout,
through the readers, the `load_kspace` dispatcher, the dataset listing and `evaluate_recon`."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from helpers import bad_input, random_kspace
from mribundles import sample_data
from mribundles.data import kspace_slices
from mribundles.errors import InvalidInputError
from mribundles.evaluation import evaluate_recon
from mribundles.io import (
    kspace_shape,
    load_kspace,
    noise_covariance,
    prewhiten,
    read_ismrmrd,
    read_ismrmrd_noise,
    read_twix,
    save_kspace,
    stated_affine,
    write_cfl,
    write_ismrmrd,
)
from mribundles.physics import ifft2c, rss, simulate_multicoil_kspace

REPO = Path(__file__).resolve().parents[1]
TWIX = "pulseq_invivo_brain_16ch_meas_164128.dat"
TWIX_NPY = "pulseq_invivo_brain_16ch_ksp.npy"
SHARED_KSPACE = REPO.parent / "shared" / "data" / "kspace"
RVN = REPO / "bundles" / "brain_mri_recon_rvn"


def _oblique_affine() -> np.ndarray:
    """(phase column, readout row, slice) -> RAS: rotated in-plane, 0.9 x 1.1 mm pixels, 3 mm slices."""
    c, s = np.cos(0.4), np.sin(0.4)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-12.0, 30.0, -4.5]
    return affine


@pytest.fixture(scope="module")
def brain_images() -> torch.Tensor:
    """(4, 80, 112) real T1 slices (shipped)."""
    return torch.from_numpy(np.load(sample_data.path("voxelmorph_t1_axial_4slices_80x112.npy")))


# --- twix ---------------------------------------------------------------------------------------


def test_shipped_twix_reads_to_the_shipped_array():
    expected = np.load(sample_data.path(TWIX_NPY))  # twixtools 0.24, remove_os=False, transposed
    kspace = read_twix(sample_data.path(TWIX))
    assert kspace.dtype == torch.complex64 and tuple(kspace.shape) == (16, 128, 128)
    np.testing.assert_array_equal(kspace.numpy(), expected)
    # the dispatcher and the header-only shape agree
    np.testing.assert_array_equal(load_kspace(sample_data.path(TWIX)).numpy(), expected)
    assert kspace_shape(sample_data.path(TWIX)) == (16, 128, 128)


def test_twix_readout_oversampling_removed_on_request(tmp_path):
    full = read_twix(sample_data.path(TWIX))
    cropped = read_twix(sample_data.path(TWIX), remove_os=True)
    assert tuple(cropped.shape) == (16, 64, 128)
    # Its image is the centre half of the readout's field of view, up to FFT scaling.
    centre = ifft2c(full)[:, 32:96, :]
    image = ifft2c(cropped)
    scale = (image.abs().sum() / centre.abs().sum()).item()
    torch.testing.assert_close(image, centre * scale, rtol=0, atol=1e-4 * centre.abs().max().item() * scale)
    # ISMRMRD makes the same choice the same way: the twix array written with 2x oversampling
    # in its header, read back with remove_os, is the twix reader's remove_os array.
    write_ismrmrd(tmp_path / "twix.h5", full, readout_oversampling=2.0)
    back = read_ismrmrd(tmp_path / "twix.h5", remove_os=True).kspace[0]
    np.testing.assert_array_equal(back.numpy(), cropped.numpy())


@pytest.mark.skipif(not (SHARED_KSPACE / "pulseq_phantom_gre_32ch_meas_MID00243.dat").is_file(),
                    reason="the phantom .dat lives only in ../shared/data")
def test_phantom_twix_matches_its_npy():
    # That .npy is (coil, phase-encode, readout): our layout with the last two axes swapped.
    kspace = read_twix(SHARED_KSPACE / "pulseq_phantom_gre_32ch_meas_MID00243.dat")
    expected = np.load(SHARED_KSPACE / "pulseq_phantom_gre_32ch_ksp.npy")
    np.testing.assert_array_equal(kspace.numpy(), expected.transpose(0, 2, 1))


def test_bad_twix_files(tmp_path):
    data = Path(sample_data.path(TWIX)).read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    cut_in_header = tmp_path / "cut_in_header.dat"
    cut_in_header.write_bytes(data[:20000])
    not_twix = tmp_path / "notes.dat"
    not_twix.write_text("these are my notes, not raw data\n" * 200)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    for path, word in ((cut, "truncated"), (cut_in_header, "not a twix"), (not_twix, "not a twix"),
                       (empty, "not a readable siemens twix")):
        with bad_input(path, word):
            load_kspace(path)
        with bad_input(path, word):
            kspace_shape(path)
    with bad_input(tmp_path / "missing.dat", "not found"):
        read_twix(tmp_path / "missing.dat")


def test_corrupt_twix_block_header_is_refused(tmp_path):
    """A damaged block header in the middle that raises the ACQEND flag would make twixtools stop
    there and return half the lines as if they were the scan."""
    import twixtools
    from twixtools.mdh_def import Scan_header

    scans = twixtools.read_twix(sample_data.path(TWIX), verbose=False, parse_pmu=False)
    middle = scans[-1]["mdb"][64].mem_pos + Scan_header.EvalInfoMask.offset
    data = bytearray(Path(sample_data.path(TWIX)).read_bytes())
    data[middle] |= 1  # bit 0 of the evaluation mask: ACQEND
    corrupt = tmp_path / "corrupt.dat"
    corrupt.write_bytes(bytes(data))
    with bad_input(corrupt, "corrupt"):
        read_twix(corrupt)


# --- ISMRMRD ------------------------------------------------------------------------------------


def test_ismrmrd_round_trip(tmp_path):
    kspace = random_kspace(3, 4, 16, 12)
    mask = np.ones((3, 12), bool)
    mask[:, [1, 3, 10]] = False  # unacquired lines in every slice
    mask[2, 5] = False  # and one more in the last slice
    noise = random_kspace(4, 2500, seed=1)  # more than one noise acquisition's worth (1024 samples each)
    affine = _oblique_affine()
    path = tmp_path / "raw.h5"
    write_ismrmrd(path, kspace, mask=mask, affine=affine, noise=noise)

    raw = read_ismrmrd(path)
    np.testing.assert_array_equal(raw.kspace.numpy(), kspace * mask[:, None, None, :])
    np.testing.assert_array_equal(raw.mask.numpy(), mask)
    np.testing.assert_array_equal(raw.noise.numpy(), noise)  # set aside, not in the k-space
    np.testing.assert_allclose(raw.affine, affine, atol=1e-5)  # float32 geometry in the file
    # through the dispatcher, the listing and the header-only readers
    np.testing.assert_array_equal(load_kspace(path).numpy(), raw.kspace.numpy())
    np.testing.assert_array_equal(load_kspace(path, slice_index=2).numpy(), raw.kspace[2].numpy())
    assert kspace_shape(path) == (3, 4, 16, 12)
    assert kspace_slices(path) == [{"kspace": str(path), "slice": i} for i in range(3)]
    np.testing.assert_allclose(stated_affine(path), affine, atol=1e-5)
    np.testing.assert_array_equal(read_ismrmrd_noise(path).numpy(), noise)
    one = read_ismrmrd(path, slice_index=2)
    np.testing.assert_array_equal(one.mask.numpy(), mask[2])

    # The ismrmrd package's own reader sees the acquisitions the writer meant.
    import ismrmrd

    with ismrmrd.Dataset(str(path), "dataset", mode="r") as dataset:
        assert dataset.number_of_acquisitions() == 3 + int(mask.sum())
        assert dataset.read_acquisition(0).is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        last = dataset.read_acquisition(dataset.number_of_acquisitions() - 1)
        assert (last.idx.slice, last.idx.kspace_encode_step_1) == (2, 11)
        np.testing.assert_array_equal(last.data, kspace[2, :, :, 11])


def _header(nx: int, ny: int, center: int, recon_x: int) -> str:
    import ismrmrd.xsd as x

    def space(matrix_x, fov_x):
        return x.encodingSpaceType(matrixSize=x.matrixSizeType(x=matrix_x, y=ny, z=1),
                                   fieldOfView_mm=x.fieldOfViewMm(x=fov_x, y=float(ny), z=4.0))

    encoding = x.encodingType(
        encodedSpace=space(nx, 2.0 * nx), reconSpace=space(recon_x, 2.0 * recon_x),
        encodingLimits=x.encodingLimitsType(kspace_encoding_step_1=x.limitType(minimum=0, maximum=ny - 1, center=center)),
        trajectory=x.trajectoryType.CARTESIAN)
    return x.ToXML(x.ismrmrdHeader(experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_864_000),
                                   encoding=[encoding]))


def test_ismrmrd_file_written_by_the_ismrmrd_package(tmp_path):
    """Acquisitions placed by the header's centre line and each readout's centre sample; averages
    averaged; noise and calibration-only readouts kept out; geometry from read/phase/slice_dir."""
    import ismrmrd

    nx, ny, center, coils = 8, 6, 2, 2  # k-space centre on line 2: rows are line - 2 + 3
    path = tmp_path / "scanner.h5"
    lines = {0: random_kspace(coils, nx, seed=10), 2: random_kspace(coils, nx, seed=12), 4: random_kspace(coils, nx, seed=14)}
    second_average = random_kspace(coils, nx, seed=20)
    asymmetric = random_kspace(coils, 5, seed=30)  # 5 samples, centre sample 1: fills readout 3..7
    geometry = {"read_dir": (0.0, 1.0, 0.0), "phase_dir": (1.0, 0.0, 0.0), "slice_dir": (0.0, 0.0, 1.0),
                "position": (10.0, -20.0, 30.0)}

    def acquisition(data, line, flag=None, center_sample=nx // 2, discard_pre=0):
        acq = ismrmrd.Acquisition.from_array(data, center_sample=center_sample, discard_pre=discard_pre)
        acq.idx.kspace_encode_step_1 = line
        for name, value in geometry.items():
            getattr(acq, name)[:] = value
        if flag is not None:
            acq.set_flag(flag)
        return acq

    with ismrmrd.Dataset(str(path), "dataset", mode="w") as dataset:
        dataset.write_xml_header(_header(nx, ny, center, nx // 2).encode())
        dataset.append_acquisition(acquisition(random_kspace(coils, 32, seed=1), 0, ismrmrd.ACQ_IS_NOISE_MEASUREMENT))
        for line, data in lines.items():
            dataset.append_acquisition(acquisition(data, line))
        dataset.append_acquisition(acquisition(second_average, 4))
        dataset.append_acquisition(acquisition(random_kspace(coils, nx, seed=40), 1, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION))
        # one discarded leading sample, then the centre (sample 2 of 6 stored) on readout index 4
        padded = np.concatenate([np.full((coils, 1), 99, np.complex64), asymmetric], axis=1)
        dataset.append_acquisition(acquisition(padded, 3, center_sample=2, discard_pre=1))

    raw = read_ismrmrd(path)
    expected = np.zeros((1, coils, nx, ny), np.complex64)
    expected[0, :, :, 0 - center + ny // 2] = lines[0]
    expected[0, :, :, 2 - center + ny // 2] = lines[2]
    expected[0, :, :, 4 - center + ny // 2] = (lines[4] + second_average) / 2
    expected[0, :, 3:8, 3 - center + ny // 2] = asymmetric
    np.testing.assert_allclose(raw.kspace.numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(raw.mask.numpy(), [[False, True, False, True, True, True]])
    assert tuple(raw.noise.shape) == (coils, 32)
    # LPS -> RAS; column = phase_dir (x), row = read_dir (y), pixel 2 mm x 1 mm, slice 4 mm thick;
    # pixel (ny // 2, nx // 2) sits at the position.
    expected_affine = np.array([[-1.0, 0.0, 0.0, -10.0 + 3.0], [0.0, -2.0, 0.0, 20.0 + 2.0 * 4],
                                [0.0, 0.0, 4.0, 30.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(raw.affine, expected_affine, atol=1e-6)
    assert tuple(read_ismrmrd(path, remove_os=True).kspace.shape) == (1, coils, nx // 2, ny)


def test_prewhitening(tmp_path):
    rng = np.random.default_rng(3)
    mixing = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [0.2 + 0.3j, -0.1, 0.5]])  # correlated coils
    white = (rng.standard_normal((3, 20000)) + 1j * rng.standard_normal((3, 20000))) / np.sqrt(2)
    noise = torch.from_numpy((mixing @ white).astype(np.complex64))
    covariance = noise_covariance(noise)
    torch.testing.assert_close(covariance, torch.from_numpy(mixing @ mixing.conj().T), rtol=0, atol=0.03)
    # noise through the same whitening has identity covariance
    whitened = prewhiten(noise[:, :, None], noise)
    torch.testing.assert_close(noise_covariance(whitened[:, :, 0]), torch.eye(3, dtype=torch.complex128),
                               rtol=0, atol=1e-4)
    # from a file: the noise pre-scan whitens the k-space, (slice, coil, ...) layout
    kspace = random_kspace(2, 3, 8, 6)
    write_ismrmrd(tmp_path / "n.h5", kspace, noise=noise)
    raw = read_ismrmrd(tmp_path / "n.h5")
    torch.testing.assert_close(raw.prewhitened(), prewhiten(torch.from_numpy(kspace), noise))
    write_ismrmrd(tmp_path / "k.h5", kspace)
    with pytest.raises(InvalidInputError, match="no noise pre-scan"):
        read_ismrmrd(tmp_path / "k.h5").prewhitened()


def test_fastmri_and_ismrmrd_h5_told_apart_by_content(tmp_path):
    kspace = random_kspace(2, 3, 8, 6)
    save_kspace(tmp_path / "a_fastmri.h5", kspace)
    write_ismrmrd(tmp_path / "b_ismrmrd.h5", kspace[:1])
    shutil.copy(sample_data.path(TWIX), tmp_path / "c_twix.dat")
    listed = kspace_slices(tmp_path)
    assert listed == [{"kspace": str(tmp_path / "a_fastmri.h5"), "slice": 0},
                      {"kspace": str(tmp_path / "a_fastmri.h5"), "slice": 1},
                      {"kspace": str(tmp_path / "b_ismrmrd.h5"), "slice": 0},
                      {"kspace": str(tmp_path / "c_twix.dat")}]
    np.testing.assert_array_equal(load_kspace(tmp_path / "b_ismrmrd.h5").numpy(), kspace[:1])
    assert stated_affine(tmp_path / "a_fastmri.h5") is None


def _ismrmrd_file(path: Path, kspace: np.ndarray, **kwargs) -> Path:
    write_ismrmrd(path, kspace, **kwargs)
    return path


def test_bad_ismrmrd_files(tmp_path):
    kspace = random_kspace(2, 3, 8, 6)
    good = _ismrmrd_file(tmp_path / "good.h5", kspace, noise=random_kspace(3, 50))

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:-4000])
    with bad_input(truncated, "truncated or corrupt"):
        load_kspace(truncated)

    noise_only = tmp_path / "noise_only.h5"
    shutil.copy(good, noise_only)
    with h5py.File(noise_only, "r+") as hf:  # keep the noise pre-scan records only
        records = hf["dataset/data"][:1]
        del hf["dataset/data"]
        hf["dataset"].create_dataset("data", data=records, maxshape=(None,))
    with bad_input(noise_only, "no image acquisitions"):
        load_kspace(noise_only)
    with bad_input(noise_only, "no image acquisitions"):
        kspace_shape(noise_only)

    bad_xml = _ismrmrd_file(tmp_path / "bad_xml.h5", kspace)
    with h5py.File(bad_xml, "r+") as hf:
        hf["dataset/xml"][0] = b"<ismrmrdHeader><encoding>cut off"
    with bad_input(bad_xml, "malformed ismrmrd xml"):
        read_ismrmrd(bad_xml)

    short = _ismrmrd_file(tmp_path / "short.h5", kspace)
    with h5py.File(short, "r+") as hf:  # one readout loses samples its header still claims
        record = hf["dataset/data"][3]
        record["data"] = record["data"][:-8]
        hf["dataset/data"][3] = record
    with bad_input(short, "complex samples but its header says"):
        load_kspace(short)

    no_data = _ismrmrd_file(tmp_path / "no_data.h5", kspace)
    with h5py.File(no_data, "r+") as hf:
        del hf["dataset/data"]
    with bad_input(no_data, "no acquisitions"):
        load_kspace(no_data)

    not_acquisitions = _ismrmrd_file(tmp_path / "not_acquisitions.h5", kspace)
    with h5py.File(not_acquisitions, "r+") as hf:
        del hf["dataset/data"]
        hf["dataset/data"] = np.zeros((4, 8), np.complex64)
    with bad_input(not_acquisitions, "not a table of ismrmrd acquisitions"):
        kspace_shape(not_acquisitions)

    radial = _ismrmrd_file(tmp_path / "radial.h5", kspace)
    with h5py.File(radial, "r+") as hf:
        hf["dataset/xml"][0] = hf["dataset/xml"][0].replace(b">cartesian<", b">radial<")
    with bad_input(radial, "not cartesian"):
        load_kspace(radial)

    with bad_input("bad_mask.h5", "mask shape"):
        write_ismrmrd(tmp_path / "bad_mask.h5", kspace, mask=np.ones(5, bool))
    assert not (tmp_path / "bad_mask.h5").exists()


# --- BART: one slice of a 3D scan after the readout FFT -----------------------------------------


def test_bart_slice_of_3d_scan(tmp_path):
    kspace = random_kspace(4, 10, 7)  # (coil, ky, kz)
    write_cfl(tmp_path / "ky_kz", kspace.transpose(1, 2, 0)[None])  # BART 1 x ky x kz x coil
    assert (tmp_path / "ky_kz.hdr").read_text().splitlines()[1].split()[:4] == ["1", "10", "7", "4"]
    np.testing.assert_array_equal(load_kspace(tmp_path / "ky_kz.cfl").numpy(), kspace)
    assert kspace_shape(tmp_path / "ky_kz") == (4, 10, 7)
    # readout and phase-2: the phase axis first, the readout last, as for (kx, ky)
    write_cfl(tmp_path / "kx_kz", kspace.transpose(2, 1, 0)[:, None])  # BART kx=7 x 1 x kz=10 x coil
    np.testing.assert_array_equal(load_kspace(tmp_path / "kx_kz").numpy(), kspace)  # (coil, kz, kx)
    write_cfl(tmp_path / "three_d", random_kspace(6, 5, 4, 2))
    with bad_input(tmp_path / "three_d", "3d k-space"):
        load_kspace(tmp_path / "three_d")


# --- through a reconstruction bundle --------------------------------------------------------------


def test_bart_and_ismrmrd_files_through_evaluate_recon(tmp_path, brain_images):
    """Fully sampled k-space simulated from real T1 slices, stored as BART 1 x ky x kz x coil and as
    ISMRMRD, reconstructed by the trained RVN bundle (random 1D mask, 4x): the reference is the RSS
    of the array written, so the reader's layout is the one reconstructed."""
    one = simulate_multicoil_kspace(brain_images[1], num_coils=4, seed=1)[0]  # (coil, ky, kz)
    write_cfl(tmp_path / "slice3d", one.numpy().transpose(1, 2, 0)[None])
    result = evaluate_recon(RVN, tmp_path / "slice3d.cfl", cs_iters=2, keep_images=True)
    assert result["num_slices"] == 1
    torch.testing.assert_close(result["images"]["reference"][0], rss(ifft2c(one)), rtol=1e-5, atol=1e-6)
    methods = result["methods"]
    assert methods["brain_mri_recon_rvn"]["psnr"] > methods["zero-filled"]["psnr"] + 2

    volume = torch.stack([simulate_multicoil_kspace(brain_images[i], num_coils=4, seed=i)[0] for i in (1, 2)])
    write_ismrmrd(tmp_path / "raw.h5", volume, affine=_oblique_affine())
    result = evaluate_recon(RVN, tmp_path / "raw.h5", baselines=False, keep_images=True)
    assert result["num_slices"] == 2
    torch.testing.assert_close(result["images"]["reference"], rss(ifft2c(volume)), rtol=1e-5, atol=1e-6)
    assert result["methods"]["brain_mri_recon_rvn"]["psnr"] > 20
