"""Sharing bundles: metadata schema and its check."""

from mribundles.sharing.metadata import SCHEMA_PATH, load_schema, verify_bundle_metadata

__all__ = ["SCHEMA_PATH", "load_schema", "verify_bundle_metadata"]
