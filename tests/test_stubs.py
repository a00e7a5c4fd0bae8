"""The hand-written type stubs of the compiled module match what it exports."""

import subprocess
import sys

import pytest


def test_core_stub_matches_the_extension_module():
    pytest.importorskip("mypy")
    res = subprocess.run([sys.executable, "-m", "mypy.stubtest", "upweight._core"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
