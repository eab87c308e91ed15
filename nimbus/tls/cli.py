"""`nimbus tls init`: a local CA and a server certificate under <data_dir>/tls/."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tls_command", required=True)
    init = sub.add_parser("init", help="create (or reuse) a local CA and a server certificate")
    init.add_argument("--data-dir", default="./data", help="the registry's data directory")
    init.add_argument(
        "--hostname", action="append", default=[], help="a name clients use (repeatable)"
    )
    init.add_argument("--ip", action="append", default=[], help="an address clients use")
    init.add_argument(
        "--client", action="append", default=[], help="also a client certificate for NAME"
    )


def main(args: argparse.Namespace) -> int:
    # Here, not at the top: every `nimbus` command builds this parser, and cryptography would
    # add about 10 MiB to each service's process.
    from nimbus.tls.authority import local_authority

    directory = Path(args.data_dir) / "tls"
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    authority, created = local_authority(ca_cert, ca_key)
    print(f"{'created a' if created else 'reusing the'} CA in {ca_cert}")
    server = authority.issue_server(args.hostname, args.ip)
    server.write(directory / "server.crt", directory / "server.key")
    names = ", ".join([*args.hostname, "localhost", *args.ip, "127.0.0.1", "::1"])
    print(f"server certificate for {names}: {directory / 'server.crt'}")
    for name in args.client:
        authority.issue_client(name).write(
            directory / f"client-{name}.cert", directory / f"client-{name}.key"
        )
        print(f"client certificate for {name}: {directory / f'client-{name}.cert'}")
    cert, key = directory / "server.crt", directory / "server.key"
    print(
        f"""
serve it:   nimbus registry --tls-cert {cert} --tls-key {key}
docker:     copy {ca_cert} to /etc/docker/certs.d/HOST:PORT/ca.crt on each client
skopeo, podman: --cert-dir DIR with {ca_cert.name} in DIR (and client-NAME.cert/.key for mTLS)
replicator: the peer's ca_pem is the content of {ca_cert}"""
    )
    return 0
