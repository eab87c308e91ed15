"""Starting the registry's gRPC admin server beside the OCI API, over the same services."""

from __future__ import annotations

import grpc

from nimbus.grpcserver import start_grpc_server
from registry.admin.servicer import registry_service
from registry.config import RegistryConfig
from registry.services import Services


async def start_admin_server(config: RegistryConfig, services: Services) -> grpc.aio.Server:
    service = registry_service(services, config.gc_grace, config.gc_upload_max_age)
    return await start_grpc_server(config.grpc(), [service])
