"""A bundle registry on an MLflow tracking server: publish a packed zip, fetch it at another site.

``publish`` logs the zip as an artifact of a run in the ``mribundles-registry`` experiment and
registers it as a new version of the registered model named for the bundle, tagged with the
bundle version, the zip's sha256 and the signing key. ``fetch`` finds that version, downloads the
zip through the server, checks that it is the published file and installs it with every check of
`install_bundle`. The server is ``MLFLOW_TRACKING_URI`` (or an explicit URI).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mribundles.errors import InvalidInputError
from mribundles.sharing.install import install_bundle
from mribundles.sharing.package import open_package

__all__ = ["REGISTRY_EXPERIMENT", "fetch_bundle", "publish_bundle"]

REGISTRY_EXPERIMENT = "mribundles-registry"
_ARTIFACT_DIR = "bundle"


def _client(tracking_uri: str | None):
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise InvalidInputError("no registry: set MLFLOW_TRACKING_URI or pass --tracking-uri")
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def publish_bundle(zip_path: str | os.PathLike, tracking_uri: str | None = None) -> dict:
    """Register a packed bundle zip as a new model version; return what was registered.

    The manifest is checked first (a corrupt zip is never published), and a bundle version that
    is already registered is refused: published versions are immutable.
    """
    from mlflow.exceptions import MlflowException
    from mribundles.bundles import file_sha256

    package = open_package(zip_path)
    client, uri = _client(tracking_uri)
    name, version = package.name, package.version
    if _find_versions(client, name, version):
        raise InvalidInputError(f"{name} {version} is already published on {uri}; bump the bundle version", zip_path)

    signature = package.signature or {}
    found = client.get_experiment_by_name(REGISTRY_EXPERIMENT)
    experiment_id = found.experiment_id if found else client.create_experiment(REGISTRY_EXPERIMENT)
    run = client.create_run(experiment_id, run_name=f"publish {name} {version}")
    client.log_artifact(run.info.run_id, str(package.path), artifact_path=_ARTIFACT_DIR)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    tags = {
        "bundle_version": version,
        "zip_name": package.path.name,
        "zip_sha256": file_sha256(package.path),
        "signed_by_key": signature.get("key_id", "unsigned"),
    }
    model_version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/{_ARTIFACT_DIR}", run_id=run.info.run_id, tags=tags
    )
    return {"name": name, "bundle_version": version, "registry_version": model_version.version, "server": uri, **tags}


def _find_versions(client, name: str, bundle_version: str | None) -> list:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    if bundle_version is not None:
        versions = [v for v in versions if v.tags.get("bundle_version") == bundle_version]
    return sorted(versions, key=lambda v: int(v.version))


def fetch_bundle(
    spec: str,
    to: str | os.PathLike,
    trusted_keys: str | os.PathLike | None = None,
    allow_code: bool = False,
    tracking_uri: str | None = None,
) -> Path:
    """Download ``NAME`` (newest) or ``NAME@VERSION`` (bundle version) and install it under ``to``."""
    import mlflow
    from mribundles.bundles import file_sha256

    name, _, bundle_version = spec.partition("@")
    client, uri = _client(tracking_uri)
    versions = _find_versions(client, name, bundle_version or None)
    if not versions:
        wanted = f"{name} {bundle_version}" if bundle_version else name
        raise InvalidInputError(f"no published bundle {wanted} on {uri}")
    chosen = versions[-1]
    with tempfile.TemporaryDirectory(prefix="mribundles-fetch-") as tmp:
        zip_name = chosen.tags.get("zip_name")
        if not zip_name:
            raise InvalidInputError(f"registry version {name} v{chosen.version} on {uri} has no zip_name tag")
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{chosen.source}/{zip_name}", dst_path=tmp, tracking_uri=uri
            )
        )
        if file_sha256(local) != chosen.tags.get("zip_sha256"):
            raise InvalidInputError(f"downloaded zip differs from the published one (sha256 tag of {name} v{chosen.version})", local.name)
        package = open_package(local)
        if package.name != name:
            raise InvalidInputError(f"registry entry {name} holds bundle {package.name}", local.name)
        return install_bundle(local, to, trusted_keys, allow_code)
