"""The registry's gRPC admin API (`nimbus.v1.Registry`): thin handlers over the services."""
