# SPDX-License-Identifier: MIT
"""Every source file the repository tracks (C, Python, shell, Makefile,
units, completion, man pages) names its license with an SPDX line near its
top, and that license is the one in LICENSE."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = "SPDX-License-Identifier: MIT"


def source_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in out.split():
        p = Path(name)
        if name.startswith(("debian/", "tests/fuzz/corpus/", "conf/www/")):
            continue
        if (p.suffix in (".c", ".h", ".py", ".sh", ".5", ".8") or p.name == "Makefile" or name == ".ci/run"
                or name.startswith(("completion/", "systemd/", "conf/logrotate/"))):
            yield name


def test_every_source_file_has_the_spdx_line():
    files = list(source_files())
    assert len(files) > 100
    missing = [f for f in files if TAG not in (ROOT / f).read_text(errors="replace")[:400]]
    assert missing == []


def test_license_file_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
