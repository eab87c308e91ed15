"""What a registry has on disk: to prove that a refused request stored nothing."""

from __future__ import annotations

import os
from pathlib import Path


def snapshot(data_dir: Path) -> dict[str, int]:
    """Every file under the data directory (temporary files included) with its size."""
    found: dict[str, int] = {}
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            path = Path(root) / name
            try:
                found[str(path.relative_to(data_dir))] = path.stat().st_size
            except FileNotFoundError:
                continue
    return found


def upload_sessions(data_dir: Path, name: str) -> list[str]:
    """Upload session ids open in a repository."""
    root = data_dir / "repositories" / name / "_uploads"
    return sorted(os.listdir(root)) if root.is_dir() else []


def blob_files(data_dir: Path) -> set[str]:
    """Digests of the content-addressed blobs (manifests included)."""
    found = set()
    root = data_dir / "blobs"
    for path in root.glob("*/*/*/data"):
        found.add(f"{path.parent.parent.parent.name}:{path.parent.name}")
    return found
