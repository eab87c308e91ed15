"""The OCI Distribution v1.1 route table.

Names may contain slashes, so they match `.+` and are checked against the grammar in the
handler (a bad name must answer NAME_INVALID, not a bare 404).
"""

from __future__ import annotations

from aiohttp import web

from registry.api import base, blobs, listing, manifests, referrers, uploads

NAME = "{name:.+}"
DIGEST = "{digest:[^/]+}"


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/v2/", base.version_check, name="base")
    r.add_get("/v2", base.version_check, name="base_noslash")
    r.add_get("/v2/_catalog", listing.catalog, name="catalog")
    r.add_get("/metrics", base.metrics, name="metrics")
    r.add_get("/healthz", base.health, name="health")
    r.add_post(f"/v2/{NAME}/blobs/uploads/", uploads.start_upload, name="upload_start")
    upload = f"/v2/{NAME}/blobs/uploads/{{uuid:[^/]+}}"
    r.add_patch(upload, uploads.patch_upload, name="upload_patch")
    r.add_put(upload, uploads.put_upload, name="upload_put")
    r.add_get(upload, uploads.get_upload, name="upload_status", allow_head=False)
    r.add_delete(upload, uploads.delete_upload, name="upload_delete")
    blob = f"/v2/{NAME}/blobs/{DIGEST}"
    r.add_head(blob, blobs.head_blob, name="blob_head")
    r.add_get(blob, blobs.get_blob, name="blob_get", allow_head=False)
    r.add_delete(blob, blobs.delete_blob, name="blob_delete")
    manifest = f"/v2/{NAME}/manifests/{{reference:[^/]+}}"
    r.add_head(manifest, manifests.head_manifest, name="manifest_head")
    r.add_get(manifest, manifests.get_manifest, name="manifest_get", allow_head=False)
    r.add_put(manifest, manifests.put_manifest, name="manifest_put")
    r.add_delete(manifest, manifests.delete_manifest, name="manifest_delete")
    r.add_get(f"/v2/{NAME}/tags/list", listing.list_tags, name="tags", allow_head=False)
    r.add_get(
        f"/v2/{NAME}/referrers/{DIGEST}",
        referrers.list_referrers,
        name="referrers",
        allow_head=False,
    )
