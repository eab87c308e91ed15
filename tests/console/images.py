"""Images for the console tests: a config with entrypoint, labels and history, pushed as is."""

from __future__ import annotations

from typing import Any

from tests.fixtures.images import (
    OCI_CONFIG,
    OCI_MANIFEST,
    Blob,
    Image,
    canonical_json,
    make_layer,
)


def described_image(
    seed: int,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    layer_sizes: tuple[int, ...] = (30_000, 10_000),
) -> Image:
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        layer, diff_id = make_layer(size, seed * 100 + i)
        layers.append(layer)
        diff_ids.append(diff_id)
    config_doc: dict[str, Any] = {
        "architecture": "arm64",
        "os": "linux",
        "created": "2024-05-01T12:00:00Z",
        "config": {
            "Entrypoint": ["/usr/bin/app", "--serve"],
            "Cmd": ["--port", "8080"],
            "Env": ["PATH=/usr/bin", f"SEED={seed}"],
            "Labels": labels or {"org.opencontainers.image.source": "https://example.test/app"},
            "WorkingDir": "/srv",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"RUN step {i}"} for i in range(len(layers))],
    }
    config = Blob(OCI_CONFIG, canonical_json(config_doc))
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    if annotations:
        doc["annotations"] = annotations
    manifest = Blob(OCI_MANIFEST, canonical_json(doc))
    return Image(config, tuple(layers), manifest, {"os": "linux", "architecture": "arm64"})
