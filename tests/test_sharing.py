"""Packing, signing, reviewing and installing bundles, and every refusal, without a server.

Each refusal must name the zip and the problem on one line and leave nothing unpacked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from bundle_checks import REPO
from mribundles.cli import main
from mribundles.errors import InvalidInputError
from mribundles.sharing.install import install_bundle
from mribundles.sharing import package as package_module
from mribundles.sharing.package import MANIFEST, open_package, pack_bundle
from mribundles.sharing.review import review_bundle
from mribundles.sharing.signing import generate_keypair

BUNDLE = REPO / "bundles" / "brain_mri_recon_unet"  # the smaller one: 7.8 MB of weights


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Site A's key pair, an unrelated key pair, and site B's trusted-keys folder (A only)."""
    root = tmp_path_factory.mktemp("keys")
    site_a = generate_keypair("site_a", root / "a")
    other = generate_keypair("other", root / "other")
    trusted = root / "trusted"
    trusted.mkdir()
    shutil.copy(site_a[1], trusted)
    return {"a": site_a[0], "other": other[0], "trusted": trusted}


@pytest.fixture(scope="module")
def signed_zip(keys, tmp_path_factory):
    return pack_bundle(BUNDLE, tmp_path_factory.mktemp("packed"), key=keys["a"])


def rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """A copy of a zip with some entries' bytes replaced (what an attacker or a bad disk does)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, replace.get(info.filename, zin.read(info.filename)))
    return dst


def refused(zip_path: Path, dest: Path, match: str, **kwargs) -> None:
    with pytest.raises(InvalidInputError, match=match) as info:
        install_bundle(zip_path, dest, **kwargs)
    assert str(zip_path) in str(info.value) and "\n" not in str(info.value)
    assert not dest.exists(), "a refused install left files behind"


def test_keygen_private_key_is_owner_only_and_never_overwritten(tmp_path):
    private, public = generate_keypair("site", tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        generate_keypair("site", tmp_path)


def test_pack_is_reproducible_and_the_manifest_pins_every_file(tmp_path):
    first = pack_bundle(BUNDLE, tmp_path / "1")
    second = pack_bundle(BUNDLE, tmp_path / "2")
    assert first.name == "brain_mri_recon_unet-0.1.1.zip"
    assert first.read_bytes() == second.read_bytes()
    package = open_package(first)
    assert "brain_mri_recon_unet/models/model.pt" in package.files
    assert "brain_mri_recon_unet/configs/inference.json" in package.files
    assert not any("/outputs/" in name or "/eval/" in name for name in package.files)
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert package.files["brain_mri_recon_unet/models/model.pt"] == meta["weights_sha256"]["models/model.pt"]
    assert package.signature is None


def test_verify_reports_signature_state(signed_zip, keys, tmp_path, capsys):
    assert main(["verify", str(signed_zip)]) == 0
    assert "signature was NOT checked" in capsys.readouterr().out
    assert main(["verify", str(signed_zip), "--trusted-keys", str(keys["trusted"])]) == 0
    assert "signature OK by trusted key site_a.pub" in capsys.readouterr().out
    unsigned = pack_bundle(BUNDLE, tmp_path)
    assert main(["verify", str(unsigned)]) == 0
    assert "UNSIGNED" in capsys.readouterr().out
    assert main(["verify", str(unsigned), "--trusted-keys", str(keys["trusted"])]) == 2
    assert "bundle is unsigned" in capsys.readouterr().err


def test_signed_bundle_installs_and_keeps_its_bytes(signed_zip, keys, tmp_path):
    folder = install_bundle(signed_zip, tmp_path / "site_b", trusted_keys=keys["trusted"])
    assert folder == tmp_path / "site_b" / "brain_mri_recon_unet"
    assert (folder / "models" / "model.pt").read_bytes() == (BUNDLE / "models" / "model.pt").read_bytes()
    with pytest.raises(InvalidInputError, match="exists already"):
        install_bundle(signed_zip, tmp_path / "site_b", trusted_keys=keys["trusted"])


def test_one_changed_weight_byte_is_refused(signed_zip, keys, tmp_path):
    name = "brain_mri_recon_unet/models/model.pt"
    weights = bytearray((BUNDLE / "models" / "model.pt").read_bytes())
    weights[len(weights) // 2] ^= 0x01
    bad = rewrite(signed_zip, tmp_path / "bad.zip", {name: bytes(weights)})
    refused(bad, tmp_path / "site_b", f"content of {name} does not match its manifest sha256", trusted_keys=keys["trusted"])


def test_edited_manifest_breaks_the_signature(signed_zip, keys, tmp_path):
    """An attacker who swaps the weights and updates the manifest to match."""
    import hashlib

    name = "brain_mri_recon_unet/models/model.pt"
    evil_weights = b"not the published weights"
    with zipfile.ZipFile(signed_zip) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    manifest["files"][name] = hashlib.sha256(evil_weights).hexdigest()
    bad = rewrite(signed_zip, tmp_path / "bad.zip", {MANIFEST: json.dumps(manifest).encode(), name: evil_weights})
    refused(bad, tmp_path / "site_b", "signature by site_a.pub does not match the manifest", trusted_keys=keys["trusted"])


def test_signature_by_an_untrusted_key_is_refused(keys, tmp_path):
    by_other = pack_bundle(BUNDLE, tmp_path, key=keys["other"])
    refused(by_other, tmp_path / "site_b", "not among the trusted keys", trusted_keys=keys["trusted"])
    # --allow-code is about unsigned code, not about a signature that fails: still refused.
    refused(by_other, tmp_path / "site_b", "not among the trusted keys", trusted_keys=keys["trusted"], allow_code=True)


def _modified_bundle(tmp_path: Path, edit) -> Path:
    copy = tmp_path / "src" / BUNDLE.name
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("outputs", "eval"))
    edit(copy)
    return copy


def test_injected_code_is_listed_by_review_and_refused_unless_allowed(keys, tmp_path, capsys):
    def inject(bundle: Path) -> None:
        config = json.loads((bundle / "configs" / "inference.json").read_text())
        config["initialize"].append("$__import__('os').system('echo owned')")
        config["handlers"].append({"_target_": "evil_package.Exfiltrate", "url": "http://example.invalid"})
        (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=4))

    bundle = _modified_bundle(tmp_path, inject)
    findings = review_bundle(bundle)
    assert any(f.kind == "expression" and "os').system" in f.text for f in findings)
    (target,) = [f for f in findings if f.kind == "target"]
    assert target.file == "configs/inference.json" and target.text == "evil_package.Exfiltrate"
    assert target.key.startswith("handlers#") and target.key.endswith("#_target_")
    assert main(["review", str(bundle)]) == 0
    assert "evil_package.Exfiltrate" in capsys.readouterr().out

    unsigned = pack_bundle(bundle, tmp_path / "zips")
    refused(unsigned, tmp_path / "site_b", "evil_package.Exfiltrate.*no trusted key signed it")
    refused(unsigned, tmp_path / "site_b", "no trusted key signed it", trusted_keys=keys["trusted"])
    assert install_bundle(unsigned, tmp_path / "site_b", allow_code=True).is_dir()


def test_the_shipped_bundles_use_only_allowed_targets():
    for bundle in sorted((REPO / "bundles").iterdir()):
        assert [f for f in review_bundle(bundle) if f.kind != "expression"] == [], bundle.name


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta: meta.update(monai_version="99.0.0"), "monai 99.0.0 is required"),
        (lambda meta: meta["required_packages_version"].update({"no-such-package-xyz": "1.0"}), "no-such-package-xyz 1.0 is required but not installed"),
    ],
    ids=["monai_version", "required_package"],
)
def test_unsatisfiable_versions_are_refused(edit, message, keys, tmp_path):
    def change(bundle: Path) -> None:
        meta_file = bundle / "configs" / "metadata.json"
        meta = json.loads(meta_file.read_text())
        edit(meta)
        meta_file.write_text(json.dumps(meta, indent=4))

    signed = pack_bundle(_modified_bundle(tmp_path, change), tmp_path / "zips", key=keys["a"])
    refused(signed, tmp_path / "site_b", f"cannot satisfy the bundle: {message}", trusted_keys=keys["trusted"])


def test_truncated_or_foreign_zips_are_refused(signed_zip, tmp_path):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(signed_zip.read_bytes()[: signed_zip.stat().st_size // 2])
    refused(truncated, tmp_path / "site_b", "corrupt or truncated zip")
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("brain_mri_recon_unet/configs/metadata.json", "{}")
    refused(foreign, tmp_path / "site_b", "no manifest.json in the zip")


def test_paths_escaping_the_bundle_folder_are_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    manifest = {"format": "mribundles-manifest/1", "bundle": "x", "version": "1", "files": {"x/../../etc/cron": "0" * 64}}
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        zf.writestr("x/../../etc/cron", "payload")
    refused(evil, tmp_path / "site_b", r"unsafe path in the zip: 'x/\.\./\.\./etc/cron'")


def test_pack_refuses_weights_that_differ_from_the_metadata(tmp_path):
    bundle = _modified_bundle(tmp_path, lambda b: (b / "models" / "model.pt").write_bytes(b"retrained"))
    with pytest.raises(InvalidInputError, match="weights differ from metadata weights_sha256"):
        pack_bundle(bundle, tmp_path / "zips")
    assert not (tmp_path / "zips").exists() or not any((tmp_path / "zips").iterdir())


# --- zips built as an attacker would: every entry checked before anything is written ---------


def craft(path: Path, entries: list, listed: set[str] | None = None, name: str = "x", version: str = "1") -> Path:
    """A zip of ``entries`` ((name or ZipInfo, bytes)) after a manifest that lists ``listed``
    (default: every entry) with their real sha256, so only the check under test can refuse it."""
    arcname = lambda item: item.filename if isinstance(item, zipfile.ZipInfo) else item  # noqa: E731
    files = {arcname(i): hashlib.sha256(d).hexdigest() for i, d in entries if listed is None or arcname(i) in listed}
    manifest = {"format": "mribundles-manifest/1", "bundle": name, "version": version, "files": files}
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names it is asked to write
        zf.writestr(MANIFEST, json.dumps(manifest))
        for item, data in entries:
            zf.writestr(item, data)
    return path


def set_declared_size(zip_path: Path, arcname: str, size: int) -> None:
    """Rewrite the uncompressed size that the local and the central header of ``arcname`` declare
    (offsets from the ZIP specification, APPNOTE 4.3.7 and 4.3.12)."""
    data = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        local, pos = zf.getinfo(arcname).header_offset, zf.start_dir
    struct.pack_into("<I", data, local + 22, size)
    while data[pos:pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46:pos + 46 + name_len] == arcname.encode():
            struct.pack_into("<I", data, pos + 24, size)
        pos += 46 + name_len + extra_len + comment_len
    zip_path.write_bytes(bytes(data))


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: what unzip and tar honour
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "entries, listed, message",
    [
        ([("/x/configs/a.json", b"{}")], None, "unsafe path in the zip: '/x/configs/a.json'"),
        ([("x/configs/../../../home/me/.bashrc", b"echo owned")], None, "unsafe path in the zip"),
        ([("x/configs//a.json", b"{}")], None, "unsafe path in the zip"),
        ([("x\\configs\\a.json", b"{}")], None, "unsafe path in the zip"),
        ([(symlink_entry("x/docs/passwd"), b"/etc/passwd")], None, "symbolic link entry in the zip: 'x/docs/passwd'"),
        ([("x/configs/a.json", b"{}"), ("x/configs/a.json", b'{"evil": 1}')], None, "duplicate entry name in the zip: 'x/configs/a.json'"),
        ([("x/configs/a.json", b"{}"), ("x/configs/A.json", b'{"evil": 1}')], None, "duplicate entry name in the zip: 'x/configs/A.json'"),
        ([("x/configs/a.json", b"{}"), ("x/configs/b.json", b"{}")], {"x/configs/a.json"}, "file in the zip is not in the manifest: x/configs/b.json"),
        ([("x/configs/a.json", b"{}"), ("x/.bashrc", b"echo owned")], None, "unsafe or misplaced path in the manifest: 'x/.bashrc'"),
        ([("x/", b""), ("x/configs/a.json", b"{}")], None, "folder entry in the zip"),
    ],
    ids=["absolute", "parent", "empty_part", "backslash", "symlink", "duplicate", "duplicate_but_case",
         "not_in_manifest", "outside_the_bundle_parts", "folder"],
)
def test_unsafe_entries_are_refused_before_anything_is_written(entries, listed, message, tmp_path, capsys):
    zip_path = craft(tmp_path / "evil.zip", entries, listed)
    refused(zip_path, tmp_path / "site_b", re.escape(message))
    assert main(["review", str(zip_path)]) == 2  # review checks the zip the same way
    assert capsys.readouterr().err.startswith(f"error: {zip_path}: ")


@pytest.mark.parametrize("name, version, message", [
    ("..", "1", "unsafe path in the zip"),
    ("a/b", "1", "unsafe bundle name 'a/b'"),
    (".x", "1", "unsafe bundle name '.x'"),
    ("x", "../../1", "unsafe bundle version '../../1'"),
])
def test_a_manifest_with_an_unsafe_bundle_name_or_version_is_refused(name, version, message, tmp_path):
    zip_path = craft(tmp_path / "evil.zip", [(f"{name}/configs/a.json", b"{}")], name=name, version=version)
    refused(zip_path, tmp_path / "site_b", message)


@pytest.fixture
def tiny_zip(tmp_path):
    from test_code_policy import tiny_bundle

    return pack_bundle(tiny_bundle(tmp_path / "src", {"bundle_root": "."}), tmp_path / "zips")


def test_a_declared_size_far_above_the_real_one_is_refused(tiny_zip, tmp_path):
    name = "tiny_bundle/models/model.pt"  # holds 12 bytes
    set_declared_size(tiny_zip, name, 2**32 - 2)
    refused(tiny_zip, tmp_path / "site_b", f"{name} declares 4294967294 bytes, over the limit of {package_module.MAX_ENTRY_BYTES} per file")
    set_declared_size(tiny_zip, name, 5000)
    refused(tiny_zip, tmp_path / "site_b", f"{name} declares 5000 bytes but holds 12")


def test_a_tiny_declared_size_over_a_large_payload_is_counted_on_the_real_bytes(tmp_path, monkeypatch):
    """8 MiB of zeros deflate to 8 kB; the headers say 16 bytes. zipfile alone would stop at 16."""
    name = "x/models/big.bin"
    zip_path = craft(tmp_path / "bomb.zip", [(name, bytes(8 * 2**20))])
    set_declared_size(zip_path, name, 16)
    assert zip_path.stat().st_size < 20_000
    with zipfile.ZipFile(zip_path) as zf, pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
        zf.read(name)  # it read 16 bytes, and only its CRC (which an attacker sets) tells
    refused(zip_path, tmp_path / "site_b", f"{name} declares 16 bytes but holds 8388608")
    monkeypatch.setattr(package_module, "MAX_ENTRY_BYTES", 2**20)
    refused(zip_path, tmp_path / "site_b", rf"{name} inflates to more than 1048576 bytes, the limit per file \(its header declares 16\)")


def test_the_limit_in_total_holds_on_the_real_bytes(tmp_path, monkeypatch):
    entries = [(f"x/models/part{i}.bin", bytes(600_000)) for i in range(2)]
    zip_path = craft(tmp_path / "two.zip", entries)
    assert open_package(zip_path).files.keys() == {"x/models/part0.bin", "x/models/part1.bin"}
    with pytest.raises(InvalidInputError, match="entries declare 1200.* bytes in all, over the limit of 1000000"):
        open_package(zip_path, max_total_bytes=1_000_000)
    set_declared_size(zip_path, "x/models/part1.bin", 1000)  # the declared total is now 601 kB
    monkeypatch.setattr(package_module, "MAX_TOTAL_BYTES", 1_000_000)
    refused(zip_path, tmp_path / "site_b", "the zip's files inflate to more than the limit in total, at x/models/part1.bin")


def test_pack_refuses_symbolic_links(tmp_path):
    from test_code_policy import tiny_bundle

    secret = tmp_path / "secret.txt"
    secret.write_text("not for sharing")
    bundle = tiny_bundle(tmp_path / "src", {"bundle_root": "."})
    (bundle / "docs").mkdir()
    os.symlink(secret, bundle / "docs" / "notes.md")
    with pytest.raises(InvalidInputError, match="symbolic link in the bundle: docs/notes.md") as info:
        pack_bundle(bundle, tmp_path / "zips")
    assert str(info.value).startswith(str(bundle / "docs" / "notes.md"))
    (bundle / "docs" / "notes.md").unlink()
    os.symlink(tmp_path, bundle / "docs" / "more")  # a linked folder
    with pytest.raises(InvalidInputError, match="symbolic link in the bundle: docs/more"):
        pack_bundle(bundle, tmp_path / "zips")
    assert not (tmp_path / "zips").exists() or not any((tmp_path / "zips").iterdir())


@pytest.mark.parametrize("key, value", [("name", "../evil"), ("name", "a/b"), ("name", ".."), ("name", "a\\b"), ("name", ".hidden")])
def test_pack_refuses_unsafe_names(key, value, tmp_path, capsys):
    """(An unsafe version never gets this far: the metadata schema wants semantic versions.)"""
    from test_code_policy import tiny_bundle

    bundle = tiny_bundle(tmp_path / "src", {"bundle_root": "."})
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta[key] = value
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InvalidInputError, match=f"unsafe bundle {key} ") as info:
        pack_bundle(bundle, tmp_path / "zips")
    assert str(info.value).startswith(f"{meta_file}: unsafe bundle {key} {value!r}")
    assert main(["pack", str(bundle), "--out", str(tmp_path / "zips")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {meta_file}: unsafe bundle {key}")
    assert not (tmp_path / "zips").exists() or not any((tmp_path / "zips").iterdir())
