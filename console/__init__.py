"""The Nimbus web console: server-rendered pages over the gRPC control APIs and the OCI API.

It holds no state of its own: sessions live in encrypted cookies, everything shown is read from
the registry, the notifier and the replicator when a page is asked for.
"""
