"""`GET /v2/<name>/referrers/<digest>`: the manifests whose `subject` is that digest."""

from __future__ import annotations

import json

from aiohttp import web

from nimbus.oci.mediatypes import OCI_INDEX
from registry.api.request import namespace, query_value, repository_name
from registry.api.state import proxy
from registry.reference import Digest


async def list_referrers(request: web.Request) -> web.Response:
    name = repository_name(request)
    subject = Digest.parse(request.match_info["digest"])
    artifact_type = query_value(request, "artifactType")
    served = await proxy(request).referrers(name, subject, artifact_type, namespace(request))
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    if served.warning:
        headers["Warning"] = served.warning
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": served.descriptors}
    return web.Response(body=json.dumps(index).encode(), headers=headers)
