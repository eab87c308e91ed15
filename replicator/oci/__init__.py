"""An async client of the OCI Distribution API, for any registry (Nimbus, Distribution, others)."""
