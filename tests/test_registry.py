"""Two sites and a real MLflow server on loopback: site A publishes a signed bundle, site B
fetches, verifies and runs it, with the run tracked on the same server; and the refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mlflow_server
from bundle_checks import REPO
from mribundles.errors import InvalidInputError
from mribundles.sharing.package import pack_bundle
from mribundles.sharing.registry import fetch_bundle, publish_bundle
from mribundles.sharing.signing import generate_keypair

BUNDLE = REPO / "bundles" / "brain_mri_recon_unet"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server`: SQLite backend, artifacts proxied by the server from a local folder."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(root) as (uri, _):
        yield {"uri": uri, "artifacts": root / "artifacts"}


@pytest.fixture(scope="module")
def site_a(server, tmp_path_factory):
    """Site A: a key pair, and its bundle packed, signed and published."""
    root = tmp_path_factory.mktemp("site_a")
    private, public = generate_keypair("site_a", root)
    zip_path = pack_bundle(BUNDLE, root, key=private)
    info = publish_bundle(zip_path, server["uri"])
    return {"zip": zip_path, "public": public, "info": info}


@pytest.fixture
def trusted(site_a, tmp_path):
    folder = tmp_path / "trusted"
    folder.mkdir()
    shutil.copy(site_a["public"], folder)
    return folder


def test_publish_registers_a_model_version_with_lineage_tags(server, site_a):
    import mlflow

    info = site_a["info"]
    assert (info["name"], info["bundle_version"], info["registry_version"]) == ("brain_mri_recon_unet", "0.1.1", "1")
    client = mlflow.MlflowClient(tracking_uri=server["uri"])
    (version,) = client.search_model_versions("name='brain_mri_recon_unet'")
    assert version.tags["zip_name"] == "brain_mri_recon_unet-0.1.1.zip"
    assert version.tags["signed_by_key"] == json.loads(
        __import__("zipfile").ZipFile(site_a["zip"]).read("manifest.sig"))["key_id"]


def test_publishing_the_same_version_twice_is_refused(server, site_a):
    with pytest.raises(InvalidInputError, match="already published"):
        publish_bundle(site_a["zip"], server["uri"])


def test_site_b_fetches_verifies_and_runs_the_bundle_tracked_on_the_server(server, site_a, trusted, tmp_path):
    import mlflow

    folder = fetch_bundle("brain_mri_recon_unet@0.1.1", tmp_path / "site_b", trusted_keys=trusted, tracking_uri=server["uri"])
    assert (folder / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()

    # Run it as a user at site B would: from elsewhere, its own copy, tracked on the server.
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["uri"], "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(folder / "configs" / "inference.json"),
           "--tracking", "mlflow"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Restored all variables from {folder}/models/model.pt" in result.stdout + result.stderr
    assert (folder / "outputs" / "sigpy_brain_8ch_poisson_R8_recon.nii.gz").is_file()

    client = mlflow.MlflowClient(tracking_uri=server["uri"])
    experiment = client.get_experiment_by_name("brain_mri_recon_unet")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["weights_sha256"] == json.loads((folder / "configs" / "metadata.json").read_text())["weights_sha256"]["models/model.pt"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "outputs")} == {"outputs/sigpy_brain_8ch_poisson_R8_recon.png"}


def test_fetch_refuses_an_untrusted_signature(server, site_a, tmp_path):
    other = tmp_path / "other_keys"
    generate_keypair("other", other)
    (other / "other.key").unlink()
    with pytest.raises(InvalidInputError, match="not among the trusted keys"):
        fetch_bundle("brain_mri_recon_unet", tmp_path / "site_b", trusted_keys=other, tracking_uri=server["uri"])
    assert not (tmp_path / "site_b").exists()


def test_fetch_refuses_unsigned_code_without_trusted_keys(server, site_a, tmp_path):
    with pytest.raises(InvalidInputError, match="no trusted key signed it"):
        fetch_bundle("brain_mri_recon_unet", tmp_path / "site_b", tracking_uri=server["uri"])
    assert not (tmp_path / "site_b").exists()


def test_fetch_refuses_a_zip_altered_in_the_artifact_store(server, site_a, trusted, tmp_path):
    """Publish 0.1.2, then change one byte of the stored zip behind the server's back."""
    import zipfile

    root = tmp_path / "a2"
    bundle = root / BUNDLE.name
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("outputs", "eval"))
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["version"] = "0.1.2"
    meta["changelog"]["0.1.2"] = "test release"
    meta_file.write_text(json.dumps(meta, indent=4))
    key, _ = generate_keypair("a2", root)
    publish_bundle(pack_bundle(bundle, root, key=key), server["uri"])
    (stored,) = server["artifacts"].rglob("brain_mri_recon_unet-0.1.2.zip")
    data = bytearray(stored.read_bytes())
    with zipfile.ZipFile(stored) as zf:
        offset = zf.getinfo("brain_mri_recon_unet/models/model.pt").header_offset + 200
    data[offset] ^= 0xFF
    stored.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="differs from the published one"):
        fetch_bundle("brain_mri_recon_unet@0.1.2", tmp_path / "site_b", trusted_keys=trusted, tracking_uri=server["uri"])
    assert not (tmp_path / "site_b").exists()


def test_fetch_of_an_unknown_bundle_names_it(server, tmp_path):
    with pytest.raises(InvalidInputError, match="no published bundle brain_mri_nothing 9.9 on http"):
        fetch_bundle("brain_mri_nothing@9.9", tmp_path / "site_b", tracking_uri=server["uri"])


def _release(tmp_path: Path, version: str, edit=None) -> Path:
    """A copy of the bundle at another version, optionally edited, for a new publication."""
    bundle = tmp_path / "src" / BUNDLE.name
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("outputs", "eval"))
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["version"] = version
    meta["changelog"][version] = "test release"
    meta_file.write_text(json.dumps(meta, indent=4))
    if edit is not None:
        edit(bundle)
    return bundle


def _edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content, indent=4))


def _edited_manifest(zip_path: Path) -> Path:
    """Weights swapped after signing, with the manifest rewritten to match them."""
    import hashlib
    import zipfile

    name = f"{BUNDLE.name}/models/model.pt"
    evil = b"swapped weights"
    out = zip_path.with_name("edited-" + zip_path.name)
    with zipfile.ZipFile(zip_path) as zin, zipfile.ZipFile(out, "w") as zout:
        manifest = json.loads(zin.read("manifest.json"))
        manifest["files"][name] = hashlib.sha256(evil).hexdigest()
        for info in zin.infolist():
            data = {"manifest.json": json.dumps(manifest).encode(), name: evil}.get(info.filename, zin.read(info.filename))
            zout.writestr(info, data)
    out.replace(zip_path)  # published under the usual name
    return zip_path


REFUSALS = {
    "edited_manifest": ("0.2.0", None, _edited_manifest, "signature by site_a.pub does not match the manifest"),
    "monai_version": ("0.2.1", lambda b: _edit_json(b / "configs/metadata.json", lambda m: m.update(monai_version="99.0.0")),
                      None, "cannot satisfy the bundle: monai 99.0.0 is required"),
    "required_package": ("0.2.2", lambda b: _edit_json(b / "configs/metadata.json",
                         lambda m: m["required_packages_version"].update({"no-such-package-xyz": "1.0"})),
                         None, "no-such-package-xyz 1.0 is required but not installed"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_fetch_refuses_published_bundles_this_site_must_not_run(case, server, site_a, trusted, tmp_path):
    """Published through the server by a key site B trusts, refused by fetch, nothing unpacked."""
    version, edit, tamper, message = REFUSALS[case]
    key = next(site_a["public"].parent.glob("site_a.key"))
    zip_path = pack_bundle(_release(tmp_path, version, edit), tmp_path / "zips", key=key)
    if tamper is not None:
        tamper(zip_path)
    publish_bundle(zip_path, server["uri"])
    with pytest.raises(InvalidInputError, match=message):
        fetch_bundle(f"{BUNDLE.name}@{version}", tmp_path / "site_b", trusted_keys=trusted, tracking_uri=server["uri"])
    assert not (tmp_path / "site_b").exists()


def test_fetch_refuses_injected_code_unless_allowed(server, site_a, tmp_path):
    """Unsigned, with code injected into a config: refused, listed by review, accepted only with --allow-code."""
    inject = lambda b: _edit_json(b / "configs/inference.json", lambda c: c["initialize"].append("$__import__('os').getcwd()"))  # noqa: E731
    zip_path = pack_bundle(_release(tmp_path, "0.3.0", inject), tmp_path / "zips")
    publish_bundle(zip_path, server["uri"])
    with pytest.raises(InvalidInputError, match="no trusted key signed it"):
        fetch_bundle(f"{BUNDLE.name}@0.3.0", tmp_path / "site_b", tracking_uri=server["uri"])
    assert not (tmp_path / "site_b").exists()
    folder = fetch_bundle(f"{BUNDLE.name}@0.3.0", tmp_path / "site_b", allow_code=True, tracking_uri=server["uri"])
    assert "$__import__('os').getcwd()" in (folder / "configs" / "inference.json").read_text()


def test_fetch_refuses_a_reexported_os_system_in_a_bundle_without_expressions(server, tmp_path):
    """The walk-around a prefix allow-list let through: no `$` anywhere, `torch.os.system` as a target."""
    from test_code_policy import tiny_bundle

    bundle = tiny_bundle(tmp_path / "src", {"attack": {"_target_": "torch.os.system", "command": "true"}}, name="tiny_attack")
    publish_bundle(pack_bundle(bundle, tmp_path / "zips"), server["uri"])
    with pytest.raises(InvalidInputError, match=r"configs/inference.json:attack#_target_: torch.os.system.*no trusted key signed it"):
        fetch_bundle("tiny_attack", tmp_path / "site_b", tracking_uri=server["uri"])
    assert not (tmp_path / "site_b").exists()
