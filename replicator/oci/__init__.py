"""The replicator's OCI client: now `nimbus.oci`, re-exported here for older imports."""
