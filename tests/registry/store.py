"""What a registry stored, on its disk or in its bucket: to prove that a refused request stored
nothing, and to look at upload sessions and blobs the way the storage layout names them."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.fixtures.registry import RegistryProcess
from tests.fixtures.s3 import S3Server

_BLOB_KEY = re.compile(r"^blobs/([a-z0-9]+)/[0-9a-f]{2}/([0-9a-f]+)/data$")


class Store:
    """The files of one registry: paths relative to its root, on either driver."""

    def __init__(self, reg: RegistryProcess, s3: S3Server | None = None) -> None:
        if reg.storage == "s3" and (s3 is None or reg.s3_bucket is None):
            raise ValueError("a registry on S3 needs the S3 server and its bucket")
        self.reg = reg
        self.s3 = s3

    def snapshot(self) -> dict[str, int]:
        """Every file with its size, unfinished writes included (temporary files on disk;
        open multipart uploads in a bucket, which S3 keeps, and bills, apart from objects)."""
        if self.reg.storage == "s3":
            assert self.s3 is not None and self.reg.s3_bucket is not None
            found = self.s3.keys(self.reg.s3_bucket)
            for key, upload_id in self.s3.multipart_uploads(self.reg.s3_bucket):
                found[f"{key} (multipart upload {upload_id})"] = 0
            return found
        return _files(self.reg.data_dir)

    def upload_sessions(self, name: str) -> list[str]:
        """Upload session ids open in a repository."""
        root = f"repositories/{name}/_uploads/"
        if self.reg.storage == "s3":
            return sorted(
                {
                    key[len(root) :].split("/", 1)[0]
                    for key in self.snapshot()
                    if key.startswith(root)
                }
            )
        path = self.reg.data_dir / root
        return sorted(os.listdir(path)) if path.is_dir() else []

    def blob_files(self) -> set[str]:
        """Digests of the content-addressed blobs (manifests included)."""
        found = set()
        for key in self.snapshot():
            if match := _BLOB_KEY.match(key):
                found.add(f"{match[1]}:{match[2]}")
        return found


def _files(root: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            try:
                found[path.relative_to(root).as_posix()] = path.stat().st_size
            except FileNotFoundError:
                continue
    return found
