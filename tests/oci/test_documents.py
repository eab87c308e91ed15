"""The shared OCI document model, referrers, digests and headers: pure functions over bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from nimbus.oci import mediatypes as mt
from nimbus.oci.digests import InvalidDigestError, check_digest, digest_of, hash_bytes
from nimbus.oci.documents import InvalidManifestError, parse_manifest, read_manifest
from nimbus.oci.headers import retry_after_seconds
from nimbus.oci.referrers import referrer_descriptor, referrers_tag, with_referrer

CONFIG = {"mediaType": mt.OCI_CONFIG, "digest": digest_of(b"{}"), "size": 2}
LAYER = {"mediaType": mt.OCI_LAYER_GZIP, "digest": digest_of(b"layer"), "size": 5}
FOREIGN = {
    "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "digest": digest_of(b"foreign"),
    "size": 7,
    "urls": ["https://example.com/layer"],
}


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def image(**extra: Any) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": CONFIG,
        "layers": [LAYER],
        **extra,
    }


def test_an_image_parses_to_its_descriptors() -> None:
    doc = parse_manifest(encode(image(layers=[LAYER, FOREIGN, LAYER])), mt.OCI_MANIFEST)
    assert doc.media_type == mt.OCI_MANIFEST and not doc.is_index
    assert doc.config is not None and doc.config.digest == CONFIG["digest"]
    assert [d.digest for d in doc.layers] == [LAYER["digest"], FOREIGN["digest"], LAYER["digest"]]
    assert doc.layers[1].urls == ("https://example.com/layer",)
    # What a registry must hold: the foreign layer is not, the repeated layer counts once.
    assert [d.digest for d in doc.distributable_blobs()] == [CONFIG["digest"], LAYER["digest"]]
    assert doc.effective_artifact_type == mt.OCI_CONFIG


def test_an_index_without_media_type_is_told_apart_by_shape() -> None:
    child = {"mediaType": mt.OCI_MANIFEST, "digest": digest_of(b"m"), "size": 1}
    child["platform"] = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    doc = parse_manifest(encode({"schemaVersion": 2, "manifests": [child]}))
    assert doc.is_index and doc.media_type == mt.OCI_INDEX
    platform = doc.manifests[0].platform
    assert platform is not None and (platform.os, platform.architecture) == ("linux", "arm64")
    assert doc.references() == [child["digest"]]


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"{not json", "", "manifest is not valid JSON"),
        (b"[]", "", "manifest is not a JSON object"),
        (encode(image(schemaVersion=1)), "", "schema1 manifests are not supported"),
        (encode(image(schemaVersion=3)), "", "schemaVersion must be 2"),
        (encode(image()), mt.OCI_INDEX, "does not match the manifest's mediaType"),
        (encode(image(mediaType="text/plain")), "", "unsupported manifest media type"),
        (encode(image(layers={})), "", "layers is not a list"),
        (encode(image(layers=[{**LAYER, "size": -1}])), "", "layers[0].size is not a size"),
        (encode(image(layers=[{**LAYER, "digest": "md5:ab"}])), "", "layers[0].digest is invalid"),
        (encode(image(config=None)), "", "config is not a descriptor"),
        (encode(image(subject={"digest": LAYER["digest"]})), "", "subject.mediaType is missing"),
        (encode({"schemaVersion": 2, "mediaType": mt.OCI_INDEX}), "", "manifests is not a list"),
    ],
)
def test_what_a_registry_refuses_says_where(data: bytes, content_type: str, message: str) -> None:
    with pytest.raises(InvalidManifestError, match=message.replace("[", r"\[")):
        parse_manifest(data, content_type)


def test_a_stored_document_is_read_leniently() -> None:
    data = encode(
        {
            "config": "not a descriptor",
            "layers": [LAYER, 7, {"mediaType": "x", "size": "big"}],
            "blobs": [{"digest": digest_of(b"artifact-blob")}],
            "annotations": {"n": 1},
        }
    )
    doc = read_manifest(data)
    assert doc.media_type == mt.OCI_MANIFEST and doc.config is None
    assert [(d.digest, d.size) for d in doc.layers] == [(LAYER["digest"], 5), ("", 0)]
    # What must not be collected: digests it names anywhere, the empty ones dropped.
    assert doc.references() == [LAYER["digest"], digest_of(b"artifact-blob")]
    assert doc.annotations == {"n": "1"}
    with pytest.raises(InvalidManifestError):
        read_manifest(b"null")


def test_a_referrer_is_listed_with_its_artifact_type_and_annotations_once() -> None:
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": digest_of(b"subject"), "size": 9}
    signature = encode(
        image(artifactType="application/vnd.example.sig", subject=subject, annotations={"a": "b"})
    )
    doc = parse_manifest(signature)
    assert doc.subject is not None and doc.subject.digest == subject["digest"]
    descriptor = referrer_descriptor(doc, digest_of(signature), len(signature))
    assert descriptor.to_json() == {
        "mediaType": mt.OCI_MANIFEST,
        "digest": digest_of(signature),
        "size": len(signature),
        "artifactType": "application/vnd.example.sig",
        "annotations": {"a": "b"},
    }
    index = with_referrer(None, descriptor)
    assert index is not None
    assert json.loads(index)["manifests"] == [descriptor.to_json()]
    assert with_referrer(index, descriptor) is None
    assert referrers_tag(subject["digest"]) == "sha256-" + subject["digest"].split(":")[1]


def test_digests_we_can_verify() -> None:
    assert check_digest(digest_of(b"x", "sha512")) == digest_of(b"x", "sha512")
    with pytest.raises(InvalidDigestError, match="unsupported digest algorithm 'md5'"):
        check_digest("md5:" + "0" * 32)
    with pytest.raises(InvalidDigestError, match="invalid digest"):
        check_digest("sha256:" + "A" * 64)


async def test_large_content_hashes_to_the_same_digest() -> None:
    data = bytes(range(256)) * 4096
    assert await hash_bytes(data) == digest_of(data)


def test_retry_after_is_seconds_or_an_http_date() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120") == 120.0
    later = format_datetime(datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert retry_after_seconds(later, now) == 30.0
    # `-0000` is GMT too, though it parses without a zone.
    assert retry_after_seconds("Tue, 01 Jan 2030 12:01:00 -0000", now) == 60.0
    assert retry_after_seconds("Tue, 01 Jan 2030 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
