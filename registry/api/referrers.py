"""`GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is that digest."""

from __future__ import annotations

import json

from aiohttp import web

from nimbus.oci.mediatypes import OCI_INDEX
from registry.api.request import query_value, repository_name
from registry.api.state import services
from registry.reference import Digest


async def list_referrers(request: web.Request) -> web.Response:
    name = repository_name(request)
    subject = Digest.parse(request.match_info["digest"])
    artifact_type = query_value(request, "artifactType")
    descriptors = await services(request).manifests.referrers(name, subject, artifact_type)
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    return web.Response(body=json.dumps(index).encode(), headers=headers)
