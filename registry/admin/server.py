"""Starting the registry's gRPC admin server beside the OCI API, over the same services."""

from __future__ import annotations

import grpc

from nimbus.grpcserver import start_grpc_server
from proto.nimbus.v1 import registry_pb2_grpc as pb_grpc
from registry.admin.servicer import SERVICE_NAME, RegistryAdmin
from registry.auth.access import AccessPolicy
from registry.config import RegistryConfig
from registry.services import Services
from registry.services.gc import GarbageCollector
from registry.services.inventory import InventoryService


def registry_admin(config: RegistryConfig, services: Services) -> RegistryAdmin:
    """The servicer over the OCI API's services, with the inventory and collector it needs."""
    inventory = InventoryService(services.driver, services.repositories, services.manifests)
    gc = GarbageCollector(
        services.driver,
        services.repositories,
        services.manifests,
        grace_seconds=config.gc_grace,
        upload_max_age_seconds=config.gc_upload_max_age,
    )
    policy = None
    if config.auth.enabled:
        # Validated with the configuration; the same rules the OCI API applies.
        policy = AccessPolicy.from_config(config.auth.access, config.auth.groups)
    return RegistryAdmin(services.manifests, inventory, gc, policy)


async def start_admin_server(config: RegistryConfig, services: Services) -> grpc.aio.Server:
    admin = registry_admin(config, services)
    service = (pb_grpc.add_RegistryServicer_to_server, admin, SERVICE_NAME)
    return await start_grpc_server(config.grpc(), [service])
