"""Who may do what: the role table, as pure functions over values.

Four roles, most to least trusted.  Permissions are a fixed table rather
than per-user grants so that a member list is easy to audit.  Admins may do
everything an owner can except act on owners: an admin cannot demote, remove
or reset an owner, nor make anyone an owner.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    GUEST = "guest"


class Permission(StrEnum):
    READ = "read"
    POST = "post"
    POST_AS_COLLECTIVE = "post_as_collective"
    UPLOAD = "upload"
    MANAGE_USERS = "manage_users"
    MANAGE_PEERS = "manage_peers"
    MODERATE = "moderate"
    HARDWARE = "hardware"


_ALL = frozenset(Permission)
_MEMBER = frozenset({Permission.READ, Permission.POST, Permission.UPLOAD, Permission.HARDWARE})

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: _ALL,
    Role.ADMIN: _ALL,
    Role.MEMBER: _MEMBER,
    Role.GUEST: frozenset({Permission.READ}),
}


def parse_role(value: object) -> Role:
    """The role named ``value``; ValueError with the choices otherwise."""
    try:
        return Role(str(value))
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise ValueError(f"unknown role {value!r}: choose one of {choices}") from None


def allowed(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


def permissions_of(role: Role) -> list[str]:
    return sorted(p.value for p in PERMISSIONS[role])


def may_manage(actor: Role, target: Role, new_role: Role | None = None) -> bool:
    """May ``actor`` change or remove a user whose role is ``target`` (to ``new_role``)?"""
    if not allowed(actor, Permission.MANAGE_USERS):
        return False
    if actor is Role.OWNER:
        return True
    return target is not Role.OWNER and new_role is not Role.OWNER
