"""The benchmark image: an OCI layout with incompressible gzip layers, streamed to disk.

Layers are random data, so gzip cannot shrink them and skopeo has nothing to recompress: the
push and pull figures measure the registry, not a compressor.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from nimbus.oci.digests import digest_of
from nimbus.oci.documents import Descriptor
from nimbus.oci.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST

REF_NAME = "org.opencontainers.image.ref.name"
MIB = 1024 * 1024


@dataclass(frozen=True)
class BenchImage:
    path: Path
    tag: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def ref(self) -> str:
        """skopeo's `oci:` source for the image."""
        return f"oci:{self.path}:{self.tag}"

    @property
    def total_bytes(self) -> int:
        """What a push or pull moves: every layer, the config and the manifest."""
        return sum(d.size for d in self.layers) + self.config.size + self.manifest.size


class _RandomReader:
    """A file-like source of `size` random bytes, read in chunks."""

    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        self._left -= n
        return os.urandom(n)


class _HashingWriter:
    """Passes writes through to `target` and hashes them on the way."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, hex_ = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_


def _write_layer(layout: Path, index: int, size: int) -> tuple[Descriptor, str]:
    """One gzip tar holding a file of `size` random bytes; returns it and its diff id."""
    tmp = layout / "blobs" / f".layer-{index}.tmp"
    with open(tmp, "wb") as out:
        compressed = _HashingWriter(out)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:
            raw = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                info = tarfile.TarInfo(f"layer-{index}.bin")
                info.size = size
                info.mode = 0o644
                tar.addfile(info, _RandomReader(size))
    digest = "sha256:" + compressed.sha.hexdigest()
    tmp.rename(_blob_path(layout, digest))
    return Descriptor(OCI_LAYER_GZIP, digest, compressed.size), "sha256:" + raw.sha.hexdigest()


def _write_json(layout: Path, media_type: str, doc: dict[str, Any]) -> Descriptor:
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    digest = digest_of(data)
    _blob_path(layout, digest).write_bytes(data)
    return Descriptor(media_type, digest, len(data))


def write_layout(path: Path, layers: int, layer_bytes: int, tag: str = "bench") -> BenchImage:
    """Write an image of `layers` random layers of `layer_bytes` each as an OCI layout."""
    (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    # zlib, hashlib and urandom release the GIL: threads write layers in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        written = list(pool.map(lambda i: _write_layer(path, i, layer_bytes), range(layers)))
    config = _write_json(
        path,
        OCI_CONFIG,
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in written]},
        },
    )
    manifest = _write_json(
        path,
        OCI_MANIFEST,
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer, _ in written],
        },
    )
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [replace(manifest, annotations={REF_NAME: tag}).to_json()],
    }
    (path / "index.json").write_text(json.dumps(index))
    return BenchImage(path, tag, manifest, config, tuple(layer for layer, _ in written))
