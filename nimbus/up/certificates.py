"""The certificates of `nimbus up --tls`: the local CA (made once, then reused) and a server
certificate for the registries, issued afresh each run for the names they are reached by."""

from __future__ import annotations

import ipaddress
import socket

from nimbus.tls.authority import local_authority
from nimbus.up.stack import WILDCARD_HOSTS, TlsFiles


def ensure(files: TlsFiles, listen_host: str) -> str:
    """Make what is missing; a line saying what was done."""
    authority, created = local_authority(files.ca, files.ca_key)
    names, addresses = [], []
    hosts = [socket.gethostname()] if listen_host in WILDCARD_HOSTS else [listen_host]
    for host in hosts:
        try:
            addresses.append(str(ipaddress.ip_address(host)))
        except ValueError:
            names.append(host)
    authority.issue_server(names, addresses).write(files.cert, files.key)
    files.trust_dir.mkdir(exist_ok=True)
    (files.trust_dir / "ca.crt").write_bytes(authority.cert_pem)
    made = "created the local CA" if created else "using the local CA"
    return f"nimbus up: {made} {files.ca}; registries serve HTTPS with {files.cert}"
