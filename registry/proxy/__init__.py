"""The pull-through cache: Nimbus as the mirror of upstream registries.

`upstreams` says which upstream serves a repository name (a prefix, containerd's `?ns=`, the
default upstream) and under which name there; `service` holds the cache's rules (what is served
from storage, what is fetched or revalidated, stale-if-error); `fills` streams a blob from the
upstream into storage and to every client waiting for it; `singleflight` makes concurrent
requests of the workers of one registry share one upstream request; `records` keeps what was
filled and when a tag was fetched; `failures` turns upstream trouble into the spec's errors.
"""
