"""What a release is made of: one version everywhere, a changelog entry for it, and a release
workflow that builds every platform's wheel and publishes only from a version tag.
scripts/check_wheel.sh (run by .ci/run) builds the wheel and the sdist and runs this file, among
others, against each installed into a fresh environment."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
import subprocess
import sys

import pytest

import upweight as uw

ROOT = pathlib.Path(__file__).resolve().parent.parent
# (tomllib is Python >= 3.11; upweight supports 3.10): [package]'s version is Cargo.toml's first
CARGO_VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def test_one_version_everywhere():
    assert uw.__version__ == CARGO_VERSION
    assert importlib.metadata.version("upweight") == CARGO_VERSION  # the installed wheel's metadata
    out = subprocess.run([sys.executable, "-m", "upweight.cli", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"upweight {CARGO_VERSION}"
    project = PYPROJECT.split("[project]")[1].split("\n[")[0]
    assert not re.search(r"^version\s*=", project, re.M) and re.search(r'^dynamic = \["version"\]', project, re.M)  # no second copy


def test_the_changelog_describes_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{CARGO_VERSION}]" in changelog


@pytest.fixture(scope="module")
def workflow():
    yaml = pytest.importorskip("yaml")
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1)
    return {("on" if k is True else k): v for k, v in yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text()).items()}


def test_the_release_workflow_is_valid_for_github_actions(tmp_path):
    """The workflow cannot run here (no GitHub): it is checked against GitHub Actions' workflow
    schema (vendored by check-jsonschema, so no network), which refuses misspelt keys, wrong
    types and unknown events; a copy with one misspelt key must be refused."""
    pytest.importorskip("check_jsonschema")
    source = (ROOT / ".github/workflows/release.yml").read_text()

    def check(text: str) -> subprocess.CompletedProcess:
        path = tmp_path / "release.yml"
        path.write_text(text)
        return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
                              capture_output=True, text=True)

    ok = check(source)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "runs-on:" in source
    assert check(source.replace("runs-on:", "run-on:", 1)).returncode != 0


def test_the_release_workflow_builds_every_platform(workflow):
    wheels = workflow["jobs"]["wheels"]
    platforms = {(m["os"], m["target"]) for m in wheels["strategy"]["matrix"]["include"]}
    assert platforms >= {("linux", "x86_64"), ("linux", "aarch64"), ("macos", "x86_64"), ("macos", "aarch64"), ("windows", "x64")}
    assert all(m.get("manylinux") == "2014" for m in wheels["strategy"]["matrix"]["include"] if m["os"] == "linux")
    uses = [step.get("uses", "") for step in wheels["steps"]]
    assert any(u.startswith("PyO3/maturin-action@") for u in uses)
    smoke = next(step["run"] for step in wheels["steps"] if step.get("name", "").startswith("Smoke"))
    assert "--no-index --find-links dist" in smoke and "pytest" in smoke  # the built wheel, not the source tree
    for test in workflow["env"]["SMOKE_TESTS"].split():
        assert (ROOT / test).is_file(), f"SMOKE_TESTS names {test}, which does not exist"
    sdist = workflow["jobs"]["sdist"]
    assert any(step.get("with", {}).get("command") == "sdist" for step in sdist["steps"])


def test_publishing_happens_only_from_a_version_tag_after_every_build(workflow):
    assert workflow["on"]["push"]["tags"] == ["v*"]
    publish = workflow["jobs"]["publish"]
    assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert set(publish["needs"]) == {"wheels", "sdist"}
    assert publish["permissions"] == {"id-token": "write"}  # trusted publishing, no stored token
    assert any(step.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for step in publish["steps"])


def test_the_abi3_floor_matches_requires_python():
    cargo = (ROOT / "Cargo.toml").read_text()
    assert 'requires-python = ">=3.10"' in PYPROJECT and '"abi3-py310"' in cargo
