# SPDX-License-Identifier: MIT
"""Shared fixtures for the integration tests.

The binary under test comes from $TUSKNETD (`make integration` sets it to
build/release/tusknetd, or build/sanitize/... with SANITIZE=1); without it the
release build in this checkout is used.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def tusknetd():
    """Absolute path of the tusknetd binary under test."""
    path = Path(os.environ.get("TUSKNETD") or REPO_ROOT / "build/release/tusknetd")
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not os.access(path, os.X_OK):
        pytest.fail(f"tusknetd binary {path} is missing or not executable: run 'make all' "
                    f"or set TUSKNETD", pytrace=False)
    return str(path)


@pytest.fixture
def write_config(tmp_path):
    """write_config(name, text, crlf=False) -> Path: writes TEXT (UTF-8, as is,
    or with every line ending made CRLF) to tmp_path/NAME, creating
    subdirectories."""

    def write(name, text, crlf=False):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if crlf:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        path.write_bytes(text.encode("utf-8"))
        return path

    return write
