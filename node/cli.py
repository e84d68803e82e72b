"""``talas``: the command line.

Every command works whether or not a node is running on the same data dir:
the store is SQLite in WAL mode with serialised writers, so ``talas post``
writes directly and the running node's watcher picks the event up.
Errors are one line on stderr and a non-zero exit: 1 for refused input or a
failed check, 2 for bad usage or a local problem the operator must fix.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO, TextIO

import trio

from node import peerstore
from node.accounts import Accounts
from node.cli_accounts import add_commands
from node.cli_nearby import add_commands as add_nearby_commands
from node.daemon import (
    now_ms,
    open_node,
    read_runtime_addresses,
    serve_node,
    split_host_port,
    talas_version,
)
from node.datadir import DataDir
from node.errors import CliError, LocalError, NodeExists, TalasError
from node.identity import Identity
from node.ingest import VerifyPool, decode_batch, ingest_stream, numbered_lines, verify_batch
from node.store import Store
from protocol.errors import ProtocolError
from protocol.event import is_hex32

DEFAULT_HTTP = "127.0.0.1:8765"
DEFAULT_P2P = "127.0.0.1:8766"
EXIT_REFUSED = 1
EXIT_USAGE = 2


def _read_passphrase(args: argparse.Namespace, *, confirm: bool = False) -> bytes | None:
    """The passphrase from --passphrase-file, $TALAS_PASSPHRASE, or a prompt."""
    if args.passphrase_file:
        try:
            return Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise CliError(f"cannot read passphrase file: {exc}") from exc
    env = os.environ.get("TALAS_PASSPHRASE")
    if env is not None:
        return env.encode()
    if confirm:
        first = getpass.getpass("New passphrase: ")
        if first != getpass.getpass("Repeat passphrase: "):
            raise CliError("passphrases differ")
        return first.encode()
    return None


def _unlock_passphrase(args: argparse.Namespace, identity: Identity) -> bytes | None:
    passphrase = _read_passphrase(args)
    if passphrase is None and identity.exists() and identity.node_info().encrypted:
        if not sys.stdin.isatty():
            raise CliError(
                "the keys are passphrase-protected: set TALAS_PASSPHRASE or --passphrase-file"
            )
        passphrase = getpass.getpass("Passphrase: ").encode()
    return passphrase


@contextmanager
def _open_existing(args: argparse.Namespace) -> Iterator[tuple[DataDir, Identity, Store]]:
    data = DataDir.resolve(args.data)
    identity = Identity(data.root)
    if not identity.exists():
        raise CliError(f"no node in {data.root}: run 'talas init' or 'talas run' first")
    identity.check_permissions()
    store = Store(data.database)
    try:
        yield data, identity, store
    finally:
        store.close()


@contextmanager
def _input(path: str) -> Iterator[BinaryIO]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        yield handle


def _print_json(value: object, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


# -- commands ----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    data = DataDir.resolve(args.data)
    data.ensure()
    identity = Identity(data.root)
    if identity.exists():
        raise NodeExists(f"a node already exists in {data.root}; refusing to overwrite it")
    passphrase = _read_passphrase(args, confirm=args.encrypt)
    identity.create(name=args.name, passphrase=passphrase)
    Store(data.database).close()
    print(f"created node {identity.node_info().public.hex()} ({args.name}) in {data.root}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    data = DataDir.resolve(args.data)
    try:
        http = split_host_port(args.http, default_port=8765)
        p2p = None if args.no_p2p else split_host_port(args.p2p, default_port=8766)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    identity = Identity(data.root)
    passphrase = _unlock_passphrase(args, identity)
    interfaces = _discovery_interfaces(args)
    ice = _ice_addresses(args)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with (
                open_node(data, passphrase=passphrase, name=args.name) as node,
                trio.open_nursery() as nursery,
            ):
                node.http_rate = args.rate_limit
                addresses = await nursery.start(
                    partial(
                        serve_node,
                        node,
                        http=http,
                        p2p=p2p,
                        verify_workers=args.verify_workers,
                        discovery=interfaces,
                        ice_addresses=ice,
                    )
                )
                print(f"talas {talas_version()}: node {node.node_id} ({node.name})")
                print(f"  data    {data.root}")
                if "p2p" in addresses:
                    print(f"  p2p     {addresses['p2p']}")
                if interfaces:
                    print(f"  mDNS    {', '.join(interfaces)}")
                print(f"  web UI  {addresses['http']}")
                if not await trio.to_thread.run_sync(Accounts(node.store).count):
                    print(
                        "  first run: create the owner with 'talas user add NAME --role owner',"
                        f" or in the web UI with the setup code in {data.api_token_file}"
                    )
                print("  press Ctrl+C to stop", flush=True)
                async for signum in signals:
                    print(f"talas: {signal.Signals(signum).name}, shutting down", flush=True)
                    nursery.cancel_scope.cancel()
                    break
        print("talas: stopped", flush=True)

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        ours = _first_talas_error(group)
        if ours is group:
            raise
        raise ours from group
    return 0


def _discovery_interfaces(args: argparse.Namespace) -> list[str] | None:
    """Where mDNS runs: the given addresses, else the LAN's; None when turned off."""
    if args.no_discovery:
        return None
    if args.discovery_interface:
        import ipaddress

        try:
            return [str(ipaddress.IPv4Address(a)) for a in args.discovery_interface]
        except ValueError as exc:
            raise CliError(f"--discovery-interface takes an IPv4 address: {exc}") from exc
    from node.discovery import lan_interfaces

    return lan_interfaces() or None


def _ice_addresses(args: argparse.Namespace) -> list[str] | None:
    """The host addresses WebRTC may use (None: aioice's choice, every interface but loopback)."""
    if not args.ice_address:
        return None
    import ipaddress

    try:
        return [str(ipaddress.ip_address(a)) for a in args.ice_address]
    except ValueError as exc:
        raise CliError(f"--ice-address takes an IP address: {exc}") from exc


def _first_talas_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a nursery wrapped, if it is one of ours; else the group itself."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_talas_error(exc)
            if inner is not exc:
                return inner
        elif isinstance(exc, TalasError | ProtocolError | KeyboardInterrupt):
            return exc
    return group


def cmd_id(args: argparse.Namespace) -> int:
    data = DataDir.resolve(args.data)
    identity = Identity(data.root)
    if not identity.exists():
        raise CliError(f"no node in {data.root}: run 'talas init' or 'talas run' first")
    identity.check_permissions()
    node = identity.node_info()
    _print_json(
        {
            "node_id": node.public.hex(),
            "name": node.label,
            "authors": [
                {"name": name, "id": info.public.hex(), "label": info.label}
                for name in identity.author_names()
                if (info := identity.author_info(name))
            ],
            "addresses": read_runtime_addresses(data),
            "data": str(data.root),
        }
    )
    return 0


def cmd_post(args: argparse.Namespace) -> int:
    with _open_existing(args) as (_, identity, store):
        key = identity.author_key(args.author, _unlock_passphrase(args, identity))
        event = store.append_local(key, kind="post", body={"text": args.text}, now_ms=now_ms())
    print(event.id)
    return 0


def cmd_events_export(args: argparse.Namespace) -> int:
    with _open_existing(args) as (_, _, store):
        out = sys.stdout.buffer
        for raw in store.iter_raw(author=args.author):
            out.write(raw.encode() + b"\n")
        out.flush()
    return 0


def cmd_events_verify(args: argparse.Namespace) -> int:
    rejected = total = 0
    with _input(args.file) as stream:
        batch: list[tuple[int, bytes]] = []
        lines = numbered_lines(stream)
        while True:
            batch = [item for _, item in zip(range(2000), lines, strict=False)]
            if not batch:
                break
            total += len(batch)
            decoded, bad = decode_batch(batch)
            _, unsigned = verify_batch(decoded)
            for rejection in sorted(bad + unsigned, key=lambda r: r.line):
                rejected += 1
                print(f"line {rejection.line}: {rejection.reason}")
    print(f"{total - rejected} valid, {rejected} rejected", file=sys.stderr)
    return EXIT_REFUSED if rejected else 0


def cmd_events_import(args: argparse.Namespace) -> int:
    with _open_existing(args) as (_, _, store), _input(args.file) as stream:
        lines = numbered_lines(stream)
        if args.workers > 1:
            with VerifyPool(args.workers) as pool:
                result = ingest_stream(store, lines, now_ms=now_ms(), pool=pool)
        else:
            result = ingest_stream(store, lines, now_ms=now_ms())
    for rejection in result.rejected:
        print(f"line {rejection.line}: {rejection.reason}", file=sys.stderr)
    report = result.report
    for event_id, why in report.refused:
        print(f"event {event_id}: {why}", file=sys.stderr)
    for author, seq in report.forks:
        print(f"fork: author {author} signed two events at seq {seq}; feed frozen", file=sys.stderr)
    summary = {
        "accepted": result.accepted,
        "rejected": len(result.rejected) + len(report.refused),
        "duplicates": result.already_known + report.duplicates,
        "held": report.held,
        "forks": len(report.forks),
    }
    print(json.dumps(summary, sort_keys=True))
    return EXIT_REFUSED if summary["rejected"] or summary["forks"] else 0


def cmd_peer_add(args: argparse.Namespace) -> int:
    try:
        address, pinned = peerstore.parse_address(args.address, args.node_id)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    with _open_existing(args) as (_, _, store):
        record = peerstore.add_peer(store, address, pinned, now_ms())
    _print_json(record.as_json())
    return 0


def cmd_peer_list(args: argparse.Namespace) -> int:
    with _open_existing(args) as (_, _, store):
        peers = peerstore.list_peers(store)
    if args.json:
        _print_json([p.as_json() for p in peers])
        return 0
    if not peers:
        print("no peers; add one with: talas peer add ws://HOST:PORT")
    for p in peers:
        seen = "never" if p.last_seen is None else _ago(p.last_seen)
        lag = "?" if p.lag is None else str(p.lag)
        node = (p.node_id or p.pinned_id or "?")[:16]
        line = f"{p.address:32} {p.state:12} node {node}  last seen {seen}  lag {lag}"
        print(line + (f"  ({p.last_error})" if p.last_error and p.state != "connected" else ""))
    return 0


def _ago(ms: int) -> str:
    seconds = max(0, (now_ms() - ms) // 1000)
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def cmd_peer_remove(args: argparse.Namespace) -> int:
    try:
        address, _ = peerstore.parse_address(args.address)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    with _open_existing(args) as (_, _, store):
        if not peerstore.remove_peer(store, address):
            raise CliError(f"no peer {address}")
    print(f"removed {address}")
    return 0


def _author_id(text: str) -> str:
    if not is_hex32(text):
        raise CliError(f"an author or node id is 64 lowercase hex characters, got {text!r}")
    return text


def cmd_follow(args: argparse.Namespace, *, following: bool = True) -> int:
    author = _author_id(args.author)
    with _open_existing(args) as (_, identity, store):
        if following and author in peerstore.blocked(store):
            raise CliError(f"{author} is blocked; unblock it first")
        key = identity.author_key(args.as_author, _unlock_passphrase(args, identity))
        peerstore.set_follow(store, author, following, now_ms())
        event = store.append_local(
            key, kind="follow", body={"author": author, "active": following}, now_ms=now_ms()
        )
    print(event.id)
    return 0


def cmd_unfollow(args: argparse.Namespace) -> int:
    return cmd_follow(args, following=False)


def cmd_block(args: argparse.Namespace) -> int:
    target = _author_id(args.target)
    with _open_existing(args) as (_, _, store):
        known_node = any(
            p.node_id == target or p.pinned_id == target for p in peerstore.list_peers(store)
        )
        what = args.what or ("node" if known_node else "author")
        peerstore.block(store, target, what, now_ms())
    print(f"blocked {what} {target}")
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    target = _author_id(args.target)
    with _open_existing(args) as (_, _, store):
        if not peerstore.unblock(store, target):
            raise CliError(f"{target} is not blocked")
    print(f"unblocked {target}")
    return 0


def cmd_author_add(args: argparse.Namespace) -> int:
    with _open_existing(args) as (_, identity, _):
        key = identity.add_author(
            args.name, label=args.label, passphrase=_unlock_passphrase(args, identity)
        )
    print(key.id)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from node import bench  # benchmarks load only when asked for

    return bench.main(args)


# -- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talas", description="Talas: a federated node for independent musicians."
    )
    parser.add_argument("--version", action="version", version=f"talas {talas_version()}")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="data directory (default: $TALAS_DATA, else the platform's user data dir)",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the key passphrase from FILE ($TALAS_PASSPHRASE also works)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create the node's keys and database")
    init.add_argument("--name", default="talas", help="the node's (collective's) display name")
    init.add_argument(
        "--encrypt", action="store_true", help="protect the keys with a passphrase (prompted)"
    )
    init.set_defaults(func=cmd_init)

    run = commands.add_parser("run", help="start the node (first run initialises it)")
    run.add_argument(
        "--http",
        default=DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"web UI and API address (default {DEFAULT_HTTP})",
    )
    run.add_argument(
        "--p2p",
        default=DEFAULT_P2P,
        metavar="HOST:PORT",
        help=f"peer-to-peer listener (default {DEFAULT_P2P}; 0.0.0.0:8766 across machines)",
    )
    run.add_argument("--no-p2p", action="store_true", help="do not federate")
    run.add_argument(
        "--discovery-interface",
        action="append",
        metavar="ADDR",
        help="run mDNS discovery on the interface with this IPv4 address (repeatable;"
        " default: the machine's LAN interfaces)",
    )
    run.add_argument("--no-discovery", action="store_true", help="no mDNS discovery")
    run.add_argument(
        "--ice-address",
        action="append",
        metavar="ADDR",
        help="offer only this host address for WebRTC audio and chat (repeatable; 127.0.0.1"
        " keeps live calls on this machine; default: every interface but loopback)",
    )
    run.add_argument(
        "--verify-workers",
        type=int,
        default=0,
        metavar="N",
        help="verify incoming signatures in N worker processes (default: in-process)",
    )
    run.add_argument("--name", default=None, help="display name when the node is created")
    run.add_argument(
        "--rate-limit",
        type=float,
        default=1000.0,
        metavar="N",
        help="HTTP requests per second per client (default 1000, bursts of 2N)",
    )
    run.set_defaults(func=cmd_run)

    ident = commands.add_parser("id", help="print the node id, author ids and addresses")
    ident.set_defaults(func=cmd_id)

    post = commands.add_parser("post", help="sign and store a post; prints its event id")
    post.add_argument("text")
    post.add_argument("--author", default="default", help="author key name (default: default)")
    post.set_defaults(func=cmd_post)

    events = commands.add_parser("events", help="export, verify or import signed events")
    sub = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    export = sub.add_parser("export", help="JSON Lines of stored events, canonical form")
    export.add_argument("--author", metavar="ID", help="only this author's feed")
    export.set_defaults(func=cmd_events_export)
    verify = sub.add_parser("verify", help="check a JSON Lines file of events")
    verify.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    verify.set_defaults(func=cmd_events_verify)
    imp = sub.add_parser("import", help="verify then store events from JSON Lines")
    imp.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    imp.add_argument("--workers", type=int, default=1, help="verify in N worker processes")
    imp.set_defaults(func=cmd_events_import)

    peer = commands.add_parser("peer", help="peers this node federates with")
    psub = peer.add_subparsers(dest="peer_command", required=True, metavar="ACTION")
    padd = psub.add_parser("add", help="add ws://HOST:PORT[#NODEID] (a node id pins the key)")
    padd.add_argument("address")
    padd.add_argument("--node-id", help="pin the peer's node id: refuse any other node")
    padd.set_defaults(func=cmd_peer_add)
    plist = psub.add_parser("list", help="peers with state, last seen and lag")
    plist.add_argument("--json", action="store_true")
    plist.set_defaults(func=cmd_peer_list)
    prem = psub.add_parser("remove", help="forget a peer")
    prem.add_argument("address")
    prem.set_defaults(func=cmd_peer_remove)

    for name, func, text in (
        ("follow", cmd_follow, "replicate an author's feed (publishes a follow event)"),
        ("unfollow", cmd_unfollow, "stop replicating an author (publishes an unfollow)"),
    ):
        cmd = commands.add_parser(name, help=text)
        cmd.add_argument("author", metavar="AUTHOR_ID")
        cmd.add_argument("--as", dest="as_author", default="default", help="which of our authors")
        cmd.set_defaults(func=func)
    blk = commands.add_parser(
        "block", help="stop replicating and showing an author, or refuse a node"
    )
    blk.add_argument("target", metavar="AUTHOR_ID|NODE_ID")
    blk.add_argument("--what", choices=("author", "node"), help="default: node if a peer has it")
    blk.set_defaults(func=cmd_block)
    unblk = commands.add_parser("unblock", help="lift a block")
    unblk.add_argument("target", metavar="AUTHOR_ID|NODE_ID")
    unblk.set_defaults(func=cmd_unblock)

    author = commands.add_parser("author", help="manage author keys (the collective, artists)")
    asub = author.add_subparsers(dest="author_command", required=True, metavar="ACTION")
    add = asub.add_parser("add", help="create an author key; prints its id")
    add.add_argument("name")
    add.add_argument("--label", help="display name")
    add.set_defaults(func=cmd_author_add)

    add_commands(commands)
    add_nearby_commands(commands)

    bench = commands.add_parser("bench", help="run a benchmark; last line is JSON")
    bsub = bench.add_subparsers(dest="bench_name", required=True, metavar="NAME")
    ingest = bsub.add_parser("ingest", help="verify-and-store throughput vs raw Ed25519")
    ingest.add_argument("--events", type=int, default=100_000)
    ingest.add_argument("--authors", type=int, default=50)
    ingest.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ingest.set_defaults(func=cmd_bench)
    sync = bsub.add_parser("sync", help="catch-up and re-sync between two nodes on loopback")
    sync.add_argument("--events", type=int, default=100_000)
    sync.add_argument("--authors", type=int, default=100)
    sync.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    sync.set_defaults(func=cmd_bench)
    gossip = bsub.add_parser("gossip", help="simulated federation over in-memory links")
    gossip.add_argument("--nodes", type=int, default=200)
    gossip.add_argument("--degree", type=int, default=6)
    gossip.add_argument("--events", type=int, default=200)
    gossip.add_argument("--follows", type=int, default=20)
    gossip.set_defaults(func=cmd_bench)
    web = bsub.add_parser("web", help="feed API latency and throughput over many stored events")
    web.add_argument("--events", type=int, default=1_000_000)
    web.add_argument("--seconds", type=float, default=10.0)
    web.add_argument("--connections", type=int, default=4)
    web.set_defaults(func=cmd_bench)
    disc = bsub.add_parser("discovery", help="time from a node starting to being listed nearby")
    disc.add_argument("--runs", type=int, default=5)
    disc.set_defaults(func=cmd_bench)
    audio = bsub.add_parser("audio", help="one-way WebRTC audio latency on loopback, CPU, idle RSS")
    audio.add_argument("--seconds", type=float, default=10.0)
    audio.add_argument("--streams", type=int, default=1)
    audio.set_defaults(func=cmd_bench)
    jam = bsub.add_parser(
        "jam", help="a jam through a host node: latency, CPU per forwarded stream"
    )
    jam.add_argument("--seconds", type=float, default=8.0)
    jam.add_argument(
        "--participants", default="2,4,8", help="comma-separated sizes, 2 to 8 (default 2,4,8)"
    )
    jam.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (CliError, LocalError) as exc:
        print(f"talas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TalasError, ProtocolError) as exc:
        print(f"talas: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_REFUSED
    return code


if __name__ == "__main__":
    sys.exit(main())
