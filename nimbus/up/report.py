"""What `nimbus up` prints: the endpoints and status of each service, replication, next steps."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from nimbus.ctl.command import DEFAULT_ADDRESSES
from nimbus.ctl.output import format_table
from nimbus.up.stack import WILDCARD_HOSTS, PeerSpec, ServiceSpec, Stack


@dataclass(frozen=True)
class ServiceRow:
    spec: ServiceSpec
    pid: int
    status: str


@dataclass(frozen=True)
class PeerRow:
    spec: PeerSpec
    outcome: str  # created, kept, updated
    rules: str


def services_table(rows: Sequence[ServiceRow]) -> str:
    return format_table(
        [
            [
                r.spec.name,
                str(r.pid),
                r.spec.endpoint or "-",
                r.spec.grpc or "-",
                r.spec.metrics or "-",
                r.status,
            ]
            for r in rows
        ],
        ["SERVICE", "PID", "ENDPOINT", "gRPC API", "METRICS", "STATUS"],
    )


def peers_table(rows: Sequence[PeerRow]) -> str:
    return format_table(
        [
            [
                f"{r.spec.from_site} -> {r.spec.site}",
                r.spec.name,
                r.spec.url,
                r.rules,
                r.outcome,
            ]
            for r in rows
        ],
        ["REPLICATION", "PEER", "TO", "RULES", "THIS RUN"],
    )


def _registry_host(stack: Stack) -> str:
    registry = next(s for s in stack.services if s.name == "registry a")
    return registry.endpoint.removeprefix("http://").removeprefix("https://")


# The process each `nimbus ctl` address flag reaches by default.
CTL_TARGETS = {"registry": "registry a", "notifier": "notifier", "replicator": "replicator a"}


def ctl_flags(stack: Stack) -> str:
    """The `nimbus ctl` flags that reach this stack ("" when the defaults do)."""
    by_name = {s.name: s for s in stack.services}
    flags = []
    for flag, name in CTL_TARGETS.items():
        spec = by_name.get(name)
        if spec is not None and spec.grpc != DEFAULT_ADDRESSES[flag]:
            flags.append(f"--{flag} {spec.grpc}")
    return " ".join(flags)


def next_steps(stack: Stack, token: bool) -> str:
    host = _registry_host(stack)
    lines = ["Try it:"]
    lines.append(f"  docker tag alpine:latest {host}/my-image && docker push {host}/my-image")
    if stack.tls is None:
        verify = "--dest-tls-verify=false"
    else:
        verify = f"--dest-cert-dir={stack.tls.trust_dir}"
    lines.append(f"  skopeo copy {verify} docker://alpine:latest docker://{host}/my-image")
    lines.append("  nimbus ctl webhooks add https://example.com/hook")
    if stack.peers:
        lines.append("  nimbus ctl peers status")
        peer = stack.peers[0].name
        lines.append(f"  nimbus ctl peers update {peer} --deletes    (replicate deletes too)")
    flags = ctl_flags(stack)
    if flags:
        lines.append(f"On these ports nimbus ctl needs: {flags}")
    if token:
        lines.append("nimbus ctl needs the admin token too: --token or NIMBUS_ADMIN_TOKEN.")
    if stack.tls is not None:
        lines += trust_steps(stack)
    if stack.listen_host in WILDCARD_HOSTS:
        port = host.rsplit(":", 1)[1]
        plain = "" if stack.tls else " (plain HTTP: docker needs it in insecure-registries)"
        lines.append(
            f"Listening on every interface: other hosts use {socket.gethostname()}:{port}{plain}."
        )
    return "\n".join(lines)


def trust_steps(stack: Stack) -> list[str]:
    """How each client trusts the local CA of `--tls`, per registry."""
    assert stack.tls is not None
    ca = stack.tls.ca
    lines = [f"HTTPS with the local CA {ca}; each client trusts it once:"]
    for spec in stack.services:
        if spec.name.startswith("registry "):
            host = spec.endpoint.removeprefix("https://")
            lines.append(
                f"  {spec.name}: docker: sudo mkdir -p /etc/docker/certs.d/{host} && "
                f"sudo cp {ca} /etc/docker/certs.d/{host}/ca.crt"
            )
    lines.append(f"  skopeo, podman: --cert-dir={stack.tls.trust_dir} (it holds ca.crt)")
    lines.append(f"  replicator: --registry-tls-ca {ca}; a peer's ca_pem is the content of {ca}")
    lines.append(f"  curl, nimbus clients: --cacert {ca} / SSL_CERT_FILE={ca}")
    return lines
