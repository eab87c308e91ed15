"""What a plain registry does not load: the compiled libraries that only TLS certificates or
password hashing need stay out of a process not configured for them (about 10 MiB at rest)."""

from __future__ import annotations

from pathlib import Path

from nimbus.allocator import tune_for_streaming
from tests.fixtures.registry import RegistryFactory
from tests.tls.conftest import make_certs

# Shared objects (seen in the process's memory map) of libraries some configurations need.
OPTIONAL = ("cryptography", "bcrypt", "_cffi_backend")


def loaded(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    paths = {line.split()[-1] for line in maps if "/" in line}
    return {name for name in OPTIONAL for path in paths if f"/{name}" in path}


def test_a_plain_registry_loads_no_optional_library(registry_factory: RegistryFactory) -> None:
    registry = registry_factory()
    assert loaded(registry.pid) == set()


def test_a_tls_registry_does_load_what_checks_its_certificate(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    # The probe above sees a library when it is there.
    certs = make_certs(tmp_path / "tls")
    registry = registry_factory(certs.server_args())
    assert "cryptography" in loaded(registry.pid)


def test_streaming_buffers_stay_in_the_heap_on_glibc() -> None:
    # mallopt answers 0 for a parameter it does not know: both thresholds are taken.
    assert tune_for_streaming()
