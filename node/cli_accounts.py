"""``talas user`` and ``talas token``: accounts from the command line.

They write the node's database directly (SQLite WAL serialises writers), so
they work whether or not the node is running.  Passwords come from stdin or
a file, never from the command line, where other users could read them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from node.accounts import Accounts, add_member
from node.daemon import now_ms
from node.errors import CliError
from node.roles import Role


def _read_password(args: argparse.Namespace) -> str:
    """The password from --password-file, or stdin (prompted twice on a terminal)."""
    if args.password_file:
        try:
            return Path(args.password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise CliError(f"cannot read password file: {exc.strerror}") from exc
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise CliError("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user_add(args: argparse.Namespace) -> int:
    from node.cli import _open_existing, _unlock_passphrase

    with _open_existing(args) as (_, identity, store):
        password = _read_password(args)
        user = add_member(
            identity,
            Accounts(store),
            args.name,
            args.role,
            password,
            now=now_ms(),
            passphrase=_unlock_passphrase(args, identity),
        )
    print(f"added {user.name} ({user.role}), author {user.author}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    from node.cli import _open_existing, _print_json

    with _open_existing(args) as (_, _, store):
        users = Accounts(store).list_users()
    if args.json:
        _print_json([u.as_json() for u in users])
        return 0
    for user in users:
        print(f"{user.name:<32} {user.role.value:<7} {user.author}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    from node.cli import _open_existing

    with _open_existing(args) as (_, _, store):
        Accounts(store).remove(args.name)
    print(f"removed {args.name} (their signed events stay)")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from node.cli import _open_existing

    with _open_existing(args) as (_, _, store):
        token = Accounts(store).create_token(args.user, args.label, now_ms())
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from node.cli import _open_existing, _print_json

    with _open_existing(args) as (_, _, store):
        tokens: list[dict[str, Any]] = Accounts(store).tokens(args.user)
    _print_json(tokens)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from node.cli import _open_existing

    with _open_existing(args) as (_, _, store):
        if not Accounts(store).revoke_token(args.token):
            raise CliError("no such token")
    print("revoked")
    return 0


def add_commands(commands: Any) -> None:
    """Add ``user`` and ``token`` to the ``talas`` sub-command parser."""
    user = commands.add_parser("user", help="people who use this node: roles and passwords")
    usub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = usub.add_parser("add", help="add a user with an author key of their own")
    add.add_argument("name")
    add.add_argument("--role", default="member", choices=[r.value for r in Role])
    add.add_argument(
        "--password-file", metavar="FILE", help="read the password from FILE (default: stdin)"
    )
    add.set_defaults(func=cmd_user_add)
    lst = usub.add_parser("list", help="users and their roles")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_user_list)
    rem = usub.add_parser("remove", help="remove a user (their signed events stay)")
    rem.add_argument("name")
    rem.set_defaults(func=cmd_user_remove)

    token = commands.add_parser("token", help="bearer tokens for scripts")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="print a new bearer token for a user")
    create.add_argument("--user", required=True)
    create.add_argument("--label", default="cli", help="what the token is for")
    create.set_defaults(func=cmd_token_create)
    tlist = tsub.add_parser("list", help="tokens (ids, users, labels; never the secrets)")
    tlist.add_argument("--user")
    tlist.set_defaults(func=cmd_token_list)
    revoke = tsub.add_parser("revoke", help="revoke a token (the token or its 12-hex id)")
    revoke.add_argument("token")
    revoke.set_defaults(func=cmd_token_revoke)
