"""``talas nearby`` and ``talas mic``: the LAN and the mic modules, via the running node.

Discovery tables and module connections live in the running node (a serial
port can only be open in one process), so these commands call its JSON API
on the address it recorded in DATA/run.json, with the node's own token.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import httpx

from node.daemon import read_runtime_addresses
from node.datadir import DataDir
from node.errors import CliError, RemoteError


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    data = DataDir.resolve(args.data)
    url = read_runtime_addresses(data).get("http")
    if not url:
        raise CliError(f"no node is running on {data.root}: start it with 'talas run'")
    try:
        token = data.api_token_file.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read {data.api_token_file}: {exc.strerror}") from exc
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the node at {url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise RemoteError(message)
    return response.json() if response.content else None


def _ago(ms: int | None) -> str:
    if not ms:
        return "never"
    seconds = max(0, int(time.time() - ms / 1000))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def cmd_nearby(args: argparse.Namespace) -> int:
    from node.cli import _print_json

    found = _call(args, "GET", "/api/v1/nearby")
    if args.json:
        _print_json(found)
        return 0
    if not found["discovery"]:
        print("discovery is off on this node (talas run --no-discovery)")
        return 0
    for n in found["nodes"]:
        paired = " paired" if n["paired"] else ""
        where = ",".join(n["addresses"])
        print(f"node {n['node_id'][:16]}  {n['name']:<24} {where:<16} "
              f"seen {_ago(n['last_seen_ms'])}{paired}")  # fmt: skip
    for m in found["mics"]:
        where = ",".join(m["addresses"])
        print(f"mic  {m['serial']:<16}  {m['model']:<24} tcp://{where}:{m['port']}  "
              f"seen {_ago(m['last_seen_ms'])}")  # fmt: skip
    if not found["nodes"] and not found["mics"]:
        print("nothing nearby yet")
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    check = _call(args, "POST", f"/api/v1/nearby/{args.node_id}/pair", json={})
    print(f"node {check['node_id']} at {check['address']} proved its key.")
    print(f"pairing code: {check['code']}  (the other node must show the same code)")
    if not args.yes:
        if not sys.stdin.isatty():
            print("not confirmed: run again with --yes once the codes match")
            return 1
        if input("Do both screens show this code? [y/N] ").strip().lower() not in ("y", "yes"):
            print("not paired")
            return 1
    peer = _call(
        args, "POST", f"/api/v1/nearby/{args.node_id}/pair/confirm", json={"code": check["code"]}
    )
    print(f"paired: {peer['address']} pinned to {peer['pinned_id']}")
    return 0


def cmd_mic_attach(args: argparse.Namespace) -> int:
    mic = _call(args, "POST", "/api/v1/mics", json={"target": args.target})
    _print_mic(mic)
    return 0


def cmd_mic_list(args: argparse.Namespace) -> int:
    from node.cli import _print_json

    mics = _call(args, "GET", "/api/v1/mics")["items"]
    if args.json:
        _print_json(mics)
        return 0
    for mic in mics:
        state = "online" if mic["online"] else f"offline ({mic['last_error'] or 'connecting'})"
        print(f"{mic['serial'] or '?':<16} {mic['target']:<32} {state}")
    return 0


def _print_mic(mic: dict[str, Any]) -> None:
    from node.cli import _print_json

    _print_json(mic)


def cmd_mic_show(args: argparse.Namespace) -> int:
    _print_mic(_call(args, "GET", f"/api/v1/mics/{args.serial}"))
    return 0


def cmd_mic_set(args: argparse.Namespace) -> int:
    from node.cli import _print_json

    values: dict[str, Any] = {}
    if args.gain is not None:
        values["gain_db"] = args.gain
    if args.pattern is not None:
        values["pattern"] = args.pattern
    if args.low_cut is not None:
        values["low_cut_hz"] = args.low_cut
    for name in ("phantom", "mute"):
        value = getattr(args, name)
        if value is not None:
            values[name] = value == "on"
    if not values:
        raise CliError("give at least one of --gain, --pattern, --phantom, --low-cut, --mute")
    _print_json(_call(args, "PATCH", f"/api/v1/mics/{args.serial}", json=values))
    return 0


def cmd_mic_identify(args: argparse.Namespace) -> int:
    _call(args, "POST", f"/api/v1/mics/{args.serial}/identify", json={"seconds": args.seconds})
    print(f"{args.serial} blinks for {args.seconds} s")
    return 0


def cmd_mic_self_test(args: argparse.Namespace) -> int:
    from node.cli import _print_json

    result = _call(args, "POST", f"/api/v1/mics/{args.serial}/self-test", json={})
    _print_json(result)
    return 0 if result["passed"] else 1


def cmd_mic_detach(args: argparse.Namespace) -> int:
    _call(args, "DELETE", f"/api/v1/mics/{args.serial}")
    print(f"detached {args.serial}")
    return 0


def cmd_mic_passport(args: argparse.Namespace) -> int:
    from node.cli import _print_json

    if args.action:
        body: dict[str, Any] = {"action": args.action}
        if args.note:
            body["notes"] = args.note
        _call(args, "POST", f"/api/v1/mics/{args.serial}/passport", json=body)
    found = _call(args, "GET", f"/api/v1/mics/{args.serial}/passport")
    if args.json:
        _print_json(found)
        return 0
    for item in found["items"]:
        body = item["body"]
        when = time.strftime(
            "%Y-%m-%d %H:%M", time.gmtime(body.get("when", item["created"]) / 1000)
        )
        if item["kind"] == "hardware":
            parts = ", ".join(f"{p['slot']} {p['model']} #{p['serial']}" for p in body["parts"])
            print(f"{when}  registered {body['model']} firmware {body.get('firmware')}: {parts}")
        else:
            detail = ""
            if "removed" in body or "installed" in body:
                old, new = body.get("removed", {}), body.get("installed", {})
                detail = f" {old.get('serial', '-')} -> {new.get('serial', '-')}"
            if "firmware_to" in body:
                detail = f" {body.get('firmware_from', '?')} -> {body['firmware_to']}"
            print(f"{when}  {body['action']}{detail} by {body['by']}"
                  + (f": {body['notes']}" if body.get("notes") else ""))  # fmt: skip
    return 0


def add_commands(commands: Any) -> None:
    nearby = commands.add_parser("nearby", help="nodes and mic modules seen on the LAN (mDNS)")
    nearby.add_argument("--json", action="store_true")
    nearby.set_defaults(func=cmd_nearby)
    nsub = nearby.add_subparsers(dest="nearby_command", metavar="ACTION")
    pair = nsub.add_parser("pair", help="prove a nearby node's key, compare codes, pin it")
    pair.add_argument("node_id", metavar="NODE_ID")
    pair.add_argument("--yes", action="store_true", help="the codes were compared: pin at once")
    pair.set_defaults(func=cmd_pair)

    mic = commands.add_parser("mic", help="modular mic modules (serial or TCP)")
    msub = mic.add_subparsers(dest="mic_command", required=True, metavar="ACTION")
    attach = msub.add_parser("attach", help="attach PATH (serial) or tcp://HOST:PORT")
    attach.add_argument("target")
    attach.set_defaults(func=cmd_mic_attach)
    lst = msub.add_parser("list", help="attached modules, online or not")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_mic_list)
    show = msub.add_parser("show", help="one module: identity, parts, settings, levels")
    show.add_argument("serial")
    show.set_defaults(func=cmd_mic_show)
    set_ = msub.add_parser("set", help="change settings")
    set_.add_argument("serial")
    set_.add_argument("--gain", type=float, metavar="DB", help="0..60 dB in 0.5 dB steps")
    set_.add_argument("--pattern", choices=("cardioid", "supercardioid", "omni", "figure8"))
    set_.add_argument("--phantom", choices=("on", "off"))
    set_.add_argument("--low-cut", type=int, choices=(0, 80, 160), metavar="HZ")
    set_.add_argument("--mute", choices=("on", "off"))
    set_.set_defaults(func=cmd_mic_set)
    ident = msub.add_parser("identify", help="blink the module's LED")
    ident.add_argument("serial")
    ident.add_argument("--seconds", type=int, default=5)
    ident.set_defaults(func=cmd_mic_identify)
    test = msub.add_parser("self-test", help="run the module's self-test (exit 1 if it fails)")
    test.add_argument("serial")
    test.set_defaults(func=cmd_mic_self_test)
    detach = msub.add_parser("detach", help="stop managing a module")
    detach.add_argument("serial")
    detach.set_defaults(func=cmd_mic_detach)
    pas = msub.add_parser("passport", help="the module's parts and repair history")
    pas.add_argument("serial")
    pas.add_argument("--json", action="store_true")
    pas.add_argument(
        "--action",
        choices=("part-swapped", "firmware-updated", "repaired", "inspected", "transferred"),
        help="record a repair done by hand first",
    )
    pas.add_argument("--note", help="notes for --action")
    pas.set_defaults(func=cmd_mic_passport)
