"""The services a console application carries, by typed key."""

from __future__ import annotations

from aiohttp import web

from console.admin import Operations
from console.catalog import Catalog
from console.clients import GrpcClients
from console.oci import RegistryClients

GRPC = web.AppKey("grpc_clients", GrpcClients)
REGISTRIES = web.AppKey("registry_clients", RegistryClients)
CATALOG = web.AppKey("catalog", Catalog)
OPERATIONS = web.AppKey("operations", Operations)
