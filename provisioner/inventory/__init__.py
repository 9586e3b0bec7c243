"""The inventory: one TOML file describing one cluster, loaded into a validated, typed model.

Pure: reads a file (or takes an already parsed dict) and returns an :class:`Inventory`, or
raises :class:`~provisioner.errors.InventoryError` whose message lists *every* problem as
``<toml.key.path>: <what is wrong>``, so a user fixes the whole file in one go instead of
one error per run.

The model mirrors inventory.example.toml key for key. Empty strings in the TOML mean "not
set" and become ``None`` here. Names that cloud code and tests must agree on (keypair,
security group, servers, tags, ports) live in :mod:`provisioner.inventory.names`.
"""

from __future__ import annotations

from pydantic import BaseModel

from provisioner.inventory.fields import memory_mib
from provisioner.inventory.load import load_inventory, parse_inventory
from provisioner.inventory.model import Inventory
from provisioner.inventory.names import (
    HUB_API_PORT,
    PROXY_API_PORT,
    SPARK_APP_UI_PORT,
    SPARK_BLOCK_MANAGER_PORT,
    SPARK_DRIVER_PORT,
    SPARK_MASTER_PORT,
    SPARK_MASTER_UI_PORT,
    SPARK_PORT_MAX_RETRIES,
    SPARK_WORKER_PORT,
    SPARK_WORKER_UI_PORT,
    cluster_tag,
    generated_keypair_name,
    master_server_name,
    reserved_ports,
    security_group_name,
    server_group_name,
    worker_index,
    worker_server_name,
)

__all__ = [
    "HUB_API_PORT",
    "PROXY_API_PORT",
    "SPARK_APP_UI_PORT",
    "SPARK_BLOCK_MANAGER_PORT",
    "SPARK_DRIVER_PORT",
    "SPARK_MASTER_PORT",
    "SPARK_MASTER_UI_PORT",
    "SPARK_PORT_MAX_RETRIES",
    "SPARK_WORKER_PORT",
    "SPARK_WORKER_UI_PORT",
    "BaseModel",
    "Inventory",
    "cluster_tag",
    "generated_keypair_name",
    "load_inventory",
    "master_server_name",
    "memory_mib",
    "parse_inventory",
    "reserved_ports",
    "security_group_name",
    "server_group_name",
    "worker_index",
    "worker_server_name",
]
