"""Settings of `nimbus ctl`: YAML file < NIMBUS_* environment < flags."""

from __future__ import annotations

from dataclasses import dataclass

from nimbus.config import ConfigError, split_hostport
from nimbus.ctl.command import DEFAULT_ADDRESSES


@dataclass
class CtlConfig:
    registry: str = DEFAULT_ADDRESSES["registry"]
    notifier: str = DEFAULT_ADDRESSES["notifier"]
    replicator: str = DEFAULT_ADDRESSES["replicator"]
    admin_token: str = ""  # NIMBUS_ADMIN_TOKEN, as the services read it
    tls: bool = False
    tls_ca: str = ""
    timeout: float = 30.0

    def validate(self) -> None:
        for service, address in self.addresses().items():
            split_hostport(address, service)
        if self.timeout <= 0:
            raise ConfigError("timeout: must be positive")

    def addresses(self) -> dict[str, str]:
        return {"registry": self.registry, "notifier": self.notifier, "replicator": self.replicator}
