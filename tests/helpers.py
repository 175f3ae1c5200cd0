"""Small helpers that several test modules share: random k-space, the one-line refusal check,
and a real MLflow server on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mribundles.errors import InvalidInputError


def random_kspace(*shape: int, seed: int = 0) -> np.ndarray:
    """Random complex64 k-space of ``shape``."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def file_tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> sha256 of its bytes ('dir' for
    folders). Two equal trees mean nothing was changed, added or removed."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@contextmanager
def bad_input(path, *words: str):
    """``with bad_input(path, word, ...):`` the body must raise InvalidInputError whose message is
    one line naming the file (its base name) and holding one of ``words`` (lower case)."""
    with pytest.raises(InvalidInputError) as info:
        yield info
    message = str(info.value)
    assert os.path.basename(path) in message and "\n" not in message, message
    assert any(w in message.lower() for w in words), message


@contextmanager
def mlflow_server(root: Path, timeout: float = 120):
    """A real ``mlflow server`` on a free loopback port (SQLite backend under ``root``, artifacts
    proxied from ``root/artifacts``), in its own process group so that a test can kill it,
    workers included. Yields (uri, process); killed on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "artifacts")]
    with open(root / "server.log", "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
                time.sleep(0.3)
        yield uri, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
