"""`nimbus ctl peers ...`: replication peers, their status and failures, and sync."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from nimbus.ctl.command import Commands, Ctl, CtlError, add_command, add_noun
from nimbus.ctl.output import Column, human_size, short_digest
from nimbus.tls.client import certificate_subject
from proto.nimbus.v1 import replication_pb2 as pb
from proto.nimbus.v1 import replication_pb2_grpc as pb_grpc

SERVICE = "replicator"
BAR_WIDTH = 30


def _stub(ctl: Ctl) -> Any:
    return pb_grpc.ReplicationStub(ctl.channel(SERVICE))


def _when(stamp: Timestamp) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return datetime.fromtimestamp(stamp.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _rules_text(peer: pb.Peer) -> str:
    if not peer.rules:
        return "all (push)"
    parts = []
    for rule in peer.rules:
        text = ",".join(rule.include) or "*"
        if rule.exclude:
            text += " -" + ",-".join(rule.exclude)
        if rule.tag_pattern:
            text += f" tags={rule.tag_pattern}"
        text += f" [{','.join(rule.actions) or 'push'}]"
        if rule.disabled:
            text += " (disabled)"
        parts.append(text)
    return "; ".join(parts)


PEER_COLUMNS = [
    Column("Name", lambda p: p.name),
    Column("URL", lambda p: p.url),
    Column("Site", lambda p: p.site),
    Column("Credentials", lambda p: p.credentials_kind or "none"),
    Column(
        "Reconcile",
        lambda p: f"{p.reconcile_interval_seconds:g}s" if p.reconcile_interval_seconds else "off",
    ),
    Column("Rules", _rules_text),
]

PEER_FIELDS = [
    *PEER_COLUMNS,
    Column("TLS verify", lambda p: "no (tls_insecure)" if p.tls_insecure else "yes"),
    Column("Private CA", lambda p: "yes" if p.ca_pem else "no"),
    # The key is set with the certificate and never shown.
    Column(
        "Client certificate",
        lambda p: (
            (certificate_subject(p.client_cert_pem) or "set") if p.client_cert_pem else "none"
        ),
    ),
]

STATUS_COLUMNS = [
    Column("Peer", lambda s: s.peer),
    Column("Backlog", lambda s: s.backlog),
    Column("In flight", lambda s: s.in_flight),
    Column("Images", lambda s: s.images_copied),
    Column("Copied", lambda s: human_size(s.bytes_copied)),
    Column("Failures", lambda s: s.failures),
    Column("Last success", lambda s: _when(s.last_success)),
    Column("Last error", lambda s: s.last_error_reason[:60] if s.last_error_reason else "-"),
]

FAILURE_COLUMNS = [
    Column("ID", lambda f: f.id),
    Column("Peer", lambda f: f.peer),
    Column("Action", lambda f: f.action),
    Column("Reference", lambda f: f"{f.repository}:{short_digest(f.reference)}"),
    Column("Attempts", lambda f: f.attempts),
    Column("Last failed", lambda f: _when(f.last_failed)),
    Column("Kind", lambda f: f.kind or "-"),
    Column("Reason", lambda f: f.reason[:80]),
]


def _add_peer_flags(parser: argparse.ArgumentParser, creating: bool) -> None:
    parser.add_argument("--site", help="the peer's Nimbus site (no changes are sent back there)")
    parser.add_argument("--username", help="user for Basic or token authentication")
    parser.add_argument("--password", help="password (prefer --password-stdin)")
    parser.add_argument("--password-stdin", action="store_true", help="read the password")
    # Its own dest: `--token` before the area is the admin token of `nimbus ctl`.
    parser.add_argument(
        "--peer-token",
        dest="peer_token",
        help="a fixed bearer token for the peer, instead of user and password",
    )
    parser.add_argument(
        "--insecure", action=argparse.BooleanOptionalAction, default=None, help="skip TLS checks"
    )
    parser.add_argument("--ca", help="PEM file of a private CA to verify the peer with")
    parser.add_argument(
        "--client-cert", help='PEM client certificate for a peer asking for one ("" removes it)'
    )
    parser.add_argument("--client-key", help="PEM private key of --client-cert")
    parser.add_argument(
        "--reconcile-interval", type=float, help="seconds between reconciles (0 off)"
    )
    parser.add_argument("--include", action="append", help="repository glob to replicate (repeat)")
    parser.add_argument("--exclude", action="append", help="repository glob to skip (repeat)")
    parser.add_argument("--tags", help="tag glob to replicate")
    parser.add_argument(
        "--deletes",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replicate deletes too (off)",
    )
    if not creating:
        parser.add_argument("--url", help="new base URL")


def _peer_from_args(ctl: Ctl) -> tuple[pb.Peer, list[str]]:
    """The peer the flags describe, and the field paths they set (for updates)."""
    a = ctl.args
    peer = pb.Peer(name=a.name, url=getattr(a, "url", None) or "")
    paths: list[str] = []
    if getattr(a, "url", None):
        paths.append("url")
    if a.site is not None:
        peer.site = a.site
        paths.append("site")
    password = a.password
    if a.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if a.username or password or a.peer_token:
        if a.peer_token and (a.username or password):
            raise CtlError("give --username and --password, or --token, not both")
        if bool(a.username) != bool(password):
            raise CtlError("--username needs --password or --password-stdin")
        peer.credentials.CopyFrom(
            pb.Credentials(
                username=a.username or "", password=password or "", token=a.peer_token or ""
            )
        )
        paths.append("credentials")
    if a.insecure is not None:
        peer.tls_insecure = a.insecure
        paths.append("tls_insecure")
    if a.ca:
        try:
            peer.ca_pem = Path(a.ca).read_text()
        except OSError as error:
            raise CtlError(f"--ca {a.ca}: {error.strerror}") from None
        paths.append("ca_pem")
    for flag, value, path in (
        ("--client-cert", a.client_cert, "client_cert_pem"),
        ("--client-key", a.client_key, "client_key_pem"),
    ):
        if value is None:
            continue
        try:
            setattr(peer, path, Path(value).read_text() if value else "")
        except OSError as error:
            raise CtlError(f"{flag} {value}: {error.strerror}") from None
        paths.append(path)
    if a.reconcile_interval is not None:
        peer.reconcile_interval_seconds = a.reconcile_interval
        paths.append("reconcile_interval_seconds")
    if a.include or a.exclude or a.tags or a.deletes is not None:
        actions = ["push", "delete"] if a.deletes else ["push"]
        peer.rules.append(
            pb.Rule(
                include=a.include or [],
                exclude=a.exclude or [],
                tag_pattern=a.tags or "",
                actions=actions,
            )
        )
        paths.append("rules")
    return peer, paths


async def add(ctl: Ctl) -> None:
    peer, _ = _peer_from_args(ctl)
    peer.url = ctl.args.peer_url
    created = await _stub(ctl).CreatePeer(pb.CreatePeerRequest(peer=peer), timeout=ctl.timeout)
    ctl.out.record(created, PEER_FIELDS)


async def list_peers(ctl: Ctl) -> None:
    peers = await ctl.pages(_stub(ctl).ListPeers, pb.ListPeersRequest(page_size=1000), "peers")
    ctl.out.table(peers, PEER_COLUMNS, empty="no peers")


async def get(ctl: Ctl) -> None:
    peer = await _stub(ctl).GetPeer(pb.GetPeerRequest(name=ctl.args.name), timeout=ctl.timeout)
    ctl.out.record(peer, PEER_FIELDS)


async def update(ctl: Ctl) -> None:
    peer, paths = _peer_from_args(ctl)
    if not paths:
        raise CtlError("nothing to change: give at least one flag")
    request = pb.UpdatePeerRequest(peer=peer, update_mask=FieldMask(paths=paths))
    updated = await _stub(ctl).UpdatePeer(request, timeout=ctl.timeout)
    ctl.out.record(updated, PEER_FIELDS)


async def remove(ctl: Ctl) -> None:
    await _stub(ctl).DeletePeer(pb.DeletePeerRequest(name=ctl.args.name), timeout=ctl.timeout)
    ctl.out.done(f"peer {ctl.args.name} deleted")


async def status(ctl: Ctl) -> None:
    request = pb.GetStatusRequest(peer=ctl.args.name or "")
    response = await _stub(ctl).GetStatus(request, timeout=ctl.timeout)
    ctl.out.table(list(response.peers), STATUS_COLUMNS, empty="no peers")


async def failures(ctl: Ctl) -> None:
    request = pb.ListFailuresRequest(peer=ctl.args.name or "", page_size=1000)
    found = await ctl.pages(_stub(ctl).ListFailures, request, "failures")
    ctl.out.table(found, FAILURE_COLUMNS, empty="no failures")


async def retry(ctl: Ctl) -> int:
    request = pb.RetryFailureRequest(peer=ctl.args.name, id=ctl.args.id or "")
    # Retries copy images: give them longer than an ordinary call.
    outcome = await _stub(ctl).RetryFailure(request, timeout=max(ctl.timeout, 600))
    text = f"retried {outcome.retried}, succeeded {outcome.succeeded}"
    for failure in outcome.still_failing:
        text += f"\n  still failing: {failure.repository}:{failure.reference}: {failure.reason}"
    ctl.out.done(text, {"retried": outcome.retried, "succeeded": outcome.succeeded})
    return 1 if outcome.still_failing else 0


def progress_bar(p: pb.SyncProgress) -> str:
    """`[#########.........]  9/20  team/app:v3` (the text a terminal redraws in place)."""
    filled = BAR_WIDTH * p.done // p.total if p.total else 0
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    what = f"{p.repository}:{p.reference}" if p.repository else p.phase
    return f"[{bar}] {p.done}/{p.total}  {human_size(p.bytes_copied)}  {what}"


async def sync(ctl: Ctl) -> int:
    request = pb.SyncRequest(peer=ctl.args.name, repository=ctl.args.repository or "")
    last = pb.SyncProgress()
    tty = sys.stdout.isatty() and not ctl.out.json_mode
    async for progress in _stub(ctl).Sync(request):
        last = progress
        if progress.finished:
            break
        if tty:
            print("\r\033[K" + progress_bar(progress), end="", flush=True)
        else:
            ctl.out.stream_item(progress, progress_bar(progress))
        if progress.error:
            ctl.out.error(f"{progress.repository}:{progress.reference}: {progress.error}")
    if tty:
        print("\r\033[K" + progress_bar(last), flush=True)
    text = (
        f"synced {last.total} tags to {ctl.args.name}: {last.images_copied} copied "
        f"({human_size(last.bytes_copied)}), {last.failed} failed"
    )
    ctl.out.done(
        text,
        {
            "total": last.total,
            "images_copied": last.images_copied,
            "bytes_copied": last.bytes_copied,
            "failed": last.failed,
        },
    )
    return 1 if last.failed else 0


def register(commands: Commands) -> None:
    peers = add_noun(commands, "peers", "replication peers (replicator)")
    p = add_command(peers, "add", add, SERVICE, "add a peer to replicate to")
    p.add_argument("name")
    p.add_argument("peer_url", metavar="URL", help="base URL of the peer's OCI API")
    _add_peer_flags(p, creating=True)
    add_command(peers, "list", list_peers, SERVICE, "list peers")
    p = add_command(peers, "get", get, SERVICE, "show one peer")
    p.add_argument("name")
    p = add_command(peers, "update", update, SERVICE, "change a peer (only the flags given)")
    p.add_argument("name")
    _add_peer_flags(p, creating=False)
    p = add_command(peers, "rm", remove, SERVICE, "delete a peer")
    p.add_argument("name")
    p = add_command(peers, "status", status, SERVICE, "backlog, progress and errors per peer")
    p.add_argument("name", nargs="?")
    p = add_command(peers, "failures", failures, SERVICE, "changes that failed for good")
    p.add_argument("name", nargs="?")
    p = add_command(peers, "retry", retry, SERVICE, "retry failed changes now")
    p.add_argument("name")
    p.add_argument("id", nargs="?", help="one failure (all of the peer's by default)")
    p = add_command(peers, "sync", sync, SERVICE, "copy what the peer is missing, with progress")
    p.add_argument("name")
    p.add_argument("--repository", help="only this repository")
