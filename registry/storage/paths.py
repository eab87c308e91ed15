"""Where each OCI object lives in a storage driver (after Distribution's paths.go).

    blobs/<alg>/<hex[:2]>/<hex>/data                          content, shared by all repositories
    repositories/<name>/_layers/<alg>/<hex>/link               blob linked into a repository
    repositories/<name>/_manifests/revisions/<alg>/<hex>/link  manifest in a repository
    repositories/<name>/_manifests/tags/<tag>/current/link     tag -> manifest digest
    repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>     referrer descriptor of a subject
    repositories/<name>/_uploads/<uuid>/data, startedat        upload sessions
    _gc/trash/<run>/<alg>-<hex>                                blob set aside by a collection
    _proxy/content/<alg>/<hex[:2]>/<hex>                       content filled from an upstream
    _proxy/repositories/<name>/_tags/<tag>                     when a cached tag was fetched
    _lifecycle/policies.json                                   immutable, quota, retention rules
    _lifecycle/leases/<job>                                    which replica runs a job, until when
    _lifecycle/pulls/<name>/_pulled/<alg>-<hex>                last pull of a manifest and its tags

Name components start with [a-z0-9], so the underscore directories never collide with names.
"""

from __future__ import annotations

from registry.reference import Digest

BLOBS = "blobs"
REPOSITORIES = "repositories"
LAYERS = "_layers"
MANIFESTS = "_manifests"
UPLOADS = "_uploads"
REFERRERS = "_referrers"
GC_TRASH = "_gc/trash"
PROXY = "_proxy"
LIFECYCLE = "_lifecycle"
# A directory holding any of these is a repository. Upload sessions alone are not: a
# refused or cancelled push must not bring a repository into being.
REPOSITORY_MARKERS = frozenset({LAYERS, MANIFESTS})


def blob_data(digest: Digest) -> str:
    return f"{BLOBS}/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def blobs_root() -> str:
    return BLOBS


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/{LAYERS}/{digest.algorithm}/{digest.hex}/link"


def layers_root(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{LAYERS}"


def revision_link(name: str, digest: Digest) -> str:
    return f"{REPOSITORIES}/{name}/{MANIFESTS}/revisions/{digest.algorithm}/{digest.hex}/link"


def revisions_root(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{MANIFESTS}/revisions"


def tags_root(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{MANIFESTS}/tags"


def tag_dir(name: str, tag: str) -> str:
    return f"{tags_root(name)}/{tag}"


def tag_link(name: str, tag: str) -> str:
    return f"{tags_root(name)}/{tag}/current/link"


def referrers_dir(name: str, subject: Digest) -> str:
    return f"{REPOSITORIES}/{name}/{REFERRERS}/{subject.algorithm}/{subject.hex}"


def referrer_entry(name: str, subject: Digest, referrer: Digest) -> str:
    return f"{referrers_dir(name, subject)}/{referrer.algorithm}-{referrer.hex}"


def uploads_root(name: str) -> str:
    return f"{REPOSITORIES}/{name}/{UPLOADS}"


def upload_dir(name: str, upload_id: str) -> str:
    return f"{uploads_root(name)}/{upload_id}"


def upload_data(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/data"


def upload_started(name: str, upload_id: str) -> str:
    return f"{upload_dir(name, upload_id)}/startedat"


def gc_trash_run(run_id: str) -> str:
    return f"{GC_TRASH}/{run_id}"


def gc_trash_entry(run_id: str, digest: Digest) -> str:
    return f"{GC_TRASH}/{run_id}/{digest.algorithm}-{digest.hex}"


def proxy_content(digest: Digest) -> str:
    """The record of content a pull-through cache filled from an upstream (not pushed)."""
    return f"{PROXY}/content/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"


def proxy_tag(name: str, tag: str) -> str:
    """The record of a cached tag: its digest and when it was fetched from the upstream."""
    return f"{PROXY}/{REPOSITORIES}/{name}/_tags/{tag}"


def lifecycle_policies() -> str:
    """The one stored document of lifecycle rules, shared by every replica."""
    return f"{LIFECYCLE}/policies.json"


def lifecycle_lease(job: str) -> str:
    return f"{LIFECYCLE}/leases/{job}"


def pull_record(name: str, digest: Digest) -> str:
    """When a manifest of a repository was last pulled (and by which tags)."""
    return f"{LIFECYCLE}/pulls/{name}/_pulled/{digest.algorithm}-{digest.hex}"
