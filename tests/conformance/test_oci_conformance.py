"""The official OCI distribution-spec conformance suites, run against Nimbus on each storage
driver: 0 failed, and every check the suite runs passed.

The suites are prebuilt programs kept outside the repository, one folder per suite with its
`run.sh`: `OCI_CONFORMANCE_DIR` when set, else `../shared/oci-conformance` beside the checkout
(or beside the local repository it was cloned from). Where they are absent the tests are
skipped and say so.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.registry import RegistryFactory
from tests.fixtures.users import write_htpasswd

ROOT = Path(__file__).resolve().parents[2]
BESIDE = Path("..", "shared", "oci-conformance")


def suites_dir() -> Path:
    if os.environ.get("OCI_CONFORMANCE_DIR"):
        return Path(os.environ["OCI_CONFORMANCE_DIR"])
    candidates = [ROOT / BESIDE]
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    origin = origin.removeprefix("file://")
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin) / BESIDE)
    return next((c for c in candidates if c.is_dir()), candidates[0]).resolve()


SUITES_DIR = suites_dir()


@dataclass(frozen=True)
class Suite:
    folder: str
    # What a full pass is: every check the suite runs. A run that silently ran fewer fails.
    passed: int


SUITES = [Suite("v1.1.1", 74), Suite("main", 854)]
SUMMARY = re.compile(r"^passed (\d+) failed (\d+) skipped (\d+)$", re.MULTILINE)
USER, PASSWORD = "conformance", "c0nformance-Pa55"


def run_suite(suite: Suite, url: str, env: dict[str, str] | None = None) -> tuple[int, int, str]:
    script = SUITES_DIR / suite.folder / "run.sh"
    if not script.exists():
        pytest.skip(f"OCI conformance suite {suite.folder} not found at {script}")
    result = subprocess.run(
        [str(script), url],
        env={**os.environ, "CONFORMANCE_TIMEOUT": "240", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = SUMMARY.findall(result.stdout)
    assert found, f"no summary line from {suite.folder}:\n{result.stdout[-3000:]}{result.stderr}"
    passed, failed, _ = (int(n) for n in found[-1])
    return passed, failed, result.stdout


def failures(output: str) -> str:
    """The suite's own lines about what failed, for the assertion message."""
    lines = [line for line in output.splitlines() if re.search(r"FAIL|\[Fail\]|Error", line)]
    return "\n".join(lines[:60]) or output[-3000:]


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.folder)
@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_conformance(registry_factory: RegistryFactory, storage: str, suite: Suite) -> None:
    registry = registry_factory(storage=storage)
    passed, failed, output = run_suite(suite, registry.url)
    assert failed == 0, failures(output)
    assert passed == suite.passed, failures(output)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.folder)
def test_conformance_with_authentication(
    registry_factory: RegistryFactory, tmp_path: Path, suite: Suite
) -> None:
    # Every request of the suite through the Basic challenge and back, as clients do.
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD})
    registry = registry_factory(["--htpasswd", str(htpasswd)])
    passed, failed, output = run_suite(
        suite, registry.url, {"OCI_USERNAME": USER, "OCI_PASSWORD": PASSWORD}
    )
    assert failed == 0, failures(output)
    assert passed == suite.passed, failures(output)
