"""What a bundle may run beyond the code policy (`policy`): every finding a reviewer must read.

A MONAI config is a program and nothing in it is sandboxed. Four things in a bundle run code,
or bring in config the review cannot see, and each is listed:

- ``expression``: a string starting with ``$`` (MONAI ``eval``-s it);
- ``target``: a ``_target_`` that does not resolve to a callable of `policy.ALLOWED_TARGETS`
  (including one written as a ``$``/``@``/``%`` value or set through a ``a#_target_`` key), and a
  ``_mode_`` other than a plain call;
- ``reference``: a ``%`` macro that copies config from another file (its path is relative to
  wherever the bundle is run from), and an ``@`` reference to an id that no config of the bundle
  defines (its value comes from outside the bundle);
- ``logging``: a ``logging.conf`` setting that differs from the collection's standard file.

Every JSON/YAML file and every ``logging.conf`` in the bundle's parts is read, not only
``configs/``: a chain stage opens any bundle folder it is pointed at, including one shipped
inside ``docs/``. A zip is reviewed from its checked entries, without unpacking it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mribundles.errors import InvalidInputError
from mribundles.sharing.package import Package, bundle_files
from mribundles.sharing.policy import logging_differences, mode_problem, target_problem

__all__ = ["CONFIG_SUFFIXES", "KINDS", "Finding", "review_bundle", "summary"]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")  # what MONAI loads as config, in any letter case
# How many values one config file may hold; a YAML alias loop never ends without it.
MAX_CONFIG_ITEMS = 1_000_000
KINDS = {
    "expression": "$ expressions",
    "target": "_target_/_mode_ values outside the allowed list",
    "reference": "references to config outside the bundle",
    "logging": "logging.conf settings other than the standard",
}


@dataclass(frozen=True)
class Finding:
    file: str  # relative to the bundle folder
    key: str  # MONAI config id, "#"-separated; "[section] option" in a logging.conf
    kind: str  # one of KINDS
    text: str  # the value as written
    why: str = ""

    def __str__(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return f"{self.file}:{self.key or '<top>'}: {self.kind}: {self.text}{why}"


def summary(findings: list[Finding]) -> str:
    """One line counting the findings of each kind."""
    return ", ".join(f"{sum(f.kind == kind for f in findings)} {label}" for kind, label in KINDS.items())


def _source(source: str | os.PathLike | Package) -> tuple[list[str], Callable[[str], bytes], Path]:
    """(the bundle's file paths, a reader of one by path, where to point errors at)."""
    if isinstance(source, Package):
        return source.paths(), source.read, source.path
    folder = Path(source)
    if not (folder / "configs").is_dir():
        raise InvalidInputError("no configs folder (not a bundle)", folder)
    return [f.relative_to(folder).as_posix() for f in bundle_files(folder)], lambda rel: (folder / rel).read_bytes(), folder


def _parse(rel: str, data: bytes, where: Path):
    """A config file as MONAI's ``ConfigParser.load_config_file`` reads it (same loaders)."""
    from monai.utils.misc import CheckKeyDuplicatesYamlLoader, check_key_duplicates

    try:
        text = data.decode("utf-8")
        if rel.lower().endswith(".json"):
            return json.loads(text, object_pairs_hook=check_key_duplicates)
        import yaml

        return yaml.load(text, CheckKeyDuplicatesYamlLoader)  # a SafeLoader
    except Exception as e:  # json, yaml, unicode and recursion errors each have their own type
        raise InvalidInputError(f"cannot parse {rel}: {' '.join(str(e).split())[:200]}", where) from e


def _last_id_part(key) -> str:
    """What a config key sets, as MONAI's ``merge_kv`` reads a top-level key: ``+`` (merge) dropped,
    ``#``/``::`` followed, so ``"network_def#_target_"`` sets a ``_target_``."""
    from monai.bundle.reference_resolver import ReferenceResolver

    return ReferenceResolver.split_id(str(key).removeprefix("+"))[-1]


def _defined_roots(configs: dict[str, object]) -> set[str]:
    """The top-level ids the bundle's configs define (``_meta_`` when it has a metadata.json)."""
    roots = set()
    for rel, content in configs.items():
        if PurePosixPath(rel).name.lower() == "metadata.json":
            roots.add("_meta_")
        if isinstance(content, dict):
            roots.update(_first_id_part(k) for k in content)
    return roots


def _first_id_part(key) -> str:
    from monai.bundle.reference_resolver import ReferenceResolver

    return ReferenceResolver.split_id(str(key).removeprefix("+"))[0]


def _string_finding(value: str, key: str, file: str, defined: set[str]) -> Finding | None:
    """A ``$`` expression, a ``%`` macro from another file, or an ``@`` reference to an id the
    bundle does not define; None for plain data. Relative ids (``@##A``) are resolved as MONAI
    resolves them."""
    from monai.bundle import ConfigParser
    from monai.bundle.reference_resolver import ReferenceResolver

    if value.startswith("$"):
        return Finding(file, key, "expression", value)
    if not value.startswith(("%", "@")):
        return None
    try:
        resolved = ConfigParser.resolve_relative_ids(ReferenceResolver.normalize_id(key), value)
    except ValueError:  # a relative id past the top: MONAI refuses to run it
        resolved = value
    if resolved.startswith("%"):
        path, _ = ConfigParser.split_path_id(resolved[1:])
        if path:
            return Finding(file, key, "reference", value, "copies config from another file, found from where the bundle runs")
        return None
    for ref in ReferenceResolver.match_refs_pattern(resolved):
        if _first_id_part(ref) not in defined:
            return Finding(file, key, "reference", value, "no config of this bundle defines it")
    return None


def _walk(content, file: str, defined: set[str], where: Path, findings: list[Finding]) -> None:
    """Append the findings of one parsed config, in file order."""
    stack = [("", content)]
    seen = 0
    while stack:
        key, node = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_ITEMS:
            raise InvalidInputError(f"{file} holds more than {MAX_CONFIG_ITEMS} values (or a YAML alias loop)", where)
        children = []
        if isinstance(node, dict):
            for k, v in node.items():
                child = f"{key}#{k}" if key else str(k)
                setting = _last_id_part(k)
                problem = target_problem(v) if setting == "_target_" else mode_problem(v) if setting == "_mode_" else None
                if problem:
                    findings.append(Finding(file, child, "target", v if isinstance(v, str) else repr(v)[:200], problem))
                if setting not in ("_target_", "_mode_") or isinstance(v, (dict, list)):
                    children.append((child, v))
        elif isinstance(node, list):
            children = [(f"{key}#{i}" if key else str(i), v) for i, v in enumerate(node)]
        elif isinstance(node, str) and (finding := _string_finding(node, key, file, defined)):
            findings.append(finding)
        stack.extend(reversed(children))


def review_bundle(source: str | os.PathLike | Package) -> list[Finding]:
    """Every finding in a bundle folder (the files `pack` would ship) or a checked `Package`,
    in path order, then file order. Unparsable config files raise InvalidInputError."""
    files, read, where = _source(source)
    configs = {rel: _parse(rel, read(rel), where) for rel in files if rel.lower().endswith(CONFIG_SUFFIXES)}
    defined = _defined_roots(configs)
    findings: list[Finding] = []
    for rel in files:
        if rel in configs:
            _walk(configs[rel], rel, defined, where, findings)
        elif PurePosixPath(rel).name.lower() == "logging.conf":
            try:
                text = read(rel).decode("utf-8")
            except UnicodeDecodeError:
                findings.append(Finding(rel, "<file>", "logging", "<not UTF-8 text>", "MONAI cannot read it"))
                continue
            for setting, value in logging_differences(text):
                findings.append(Finding(rel, setting, "logging", value, "differs from the collection's standard logging.conf"))
    return findings
