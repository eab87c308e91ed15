"""The OCI Distribution vocabulary Nimbus speaks everywhere.

Media types, digests, the manifest and index document model, referrers, the headers Nimbus adds,
and an async client of the Distribution API (`transport` below `client`). The registry, the
replicator, the tests and the benchmarks all use these, so each rule is written once.
"""
