"""A mic module's hardware passport: its parts and every repair, as signed events.

The passport of module S is every ``hardware`` and ``repair`` event whose
body names serial S, from any author this node holds, in the order the work
was done.  Because those are ordinary signed events in their authors'
feeds, the history federates, and it follows the module to a new owner: an
offer can name the module (``offer.hardware``), and the buyer keeps
appending repairs in their own feed.

This module is pure: it folds passport entries into the module's known
state and compares that state with what a module reports about itself, to
say which repair events to publish when a module is attached after a part
swap or a firmware update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.event import Event

PASSPORT_KINDS = ("hardware", "repair")


@dataclass(frozen=True)
class ModuleState:
    """What the passport says a module is made of right now."""

    serial: str
    model: str | None = None
    firmware: str | None = None
    parts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """slot -> part object (slot, model, serial, revision)."""


def entry_time(event: Event) -> int:
    """When the work was done: ``when`` for repairs, ``created`` otherwise."""
    body = event.body or {}
    when = body.get("when")
    return when if isinstance(when, int) else event.created


def ordered(entries: Iterable[Event]) -> list[Event]:
    return sorted(entries, key=lambda e: (entry_time(e), e.created, e.id))


def fold(serial: str, entries: Iterable[Event]) -> ModuleState | None:
    """The module's state after every entry, oldest first; None when it has no passport."""
    state: ModuleState | None = None
    for event in ordered(entries):
        body: dict[str, Any] = dict(event.body or {})
        if body.get("serial") != serial:
            continue
        if event.kind == "hardware":
            listed = body.get("parts")
            parts: dict[str, Mapping[str, Any]] = {
                str(p["slot"]): dict(p)
                for p in (listed if isinstance(listed, list) else [])
                if isinstance(p, dict)
            }
            model = body.get("model")
            firmware = body.get("firmware")
            state = ModuleState(
                serial,
                str(model) if isinstance(model, str) else None,
                str(firmware) if isinstance(firmware, str) else None,
                parts,
            )
        elif event.kind == "repair" and state is not None:
            parts = dict(state.parts)
            installed: Any = body.get("installed")
            removed: Any = body.get("removed")
            if isinstance(removed, dict) and parts.get(str(removed.get("slot"))) == removed:
                parts.pop(str(removed.get("slot")))
            if isinstance(installed, dict) and isinstance(installed.get("slot"), str):
                parts[str(installed["slot"])] = dict(installed)
            firmware = body.get("firmware_to", state.firmware)
            state = ModuleState(
                serial,
                state.model,
                str(firmware) if isinstance(firmware, str) else state.firmware,
                parts,
            )
    return state


def registration(info: Mapping[str, Any], *, notes: str | None = None) -> dict[str, Any]:
    """The ``hardware`` body that starts a passport, from a module's own report."""
    body: dict[str, Any] = {
        "serial": info["serial"],
        "model": info["model"],
        "firmware": info["firmware"],
        "parts": [_part(p) for p in info["parts"]],
    }
    if notes:
        body["notes"] = notes
    return body


def changes(
    state: ModuleState, info: Mapping[str, Any], *, by: str, when: int
) -> list[dict[str, Any]]:
    """``repair`` bodies that bring the passport in line with the module's report."""
    out: list[dict[str, Any]] = []
    reported = {str(p["slot"]): _part(p) for p in info["parts"]}
    for slot in sorted(set(reported) | set(state.parts)):
        before, after = state.parts.get(slot), reported.get(slot)
        if before is not None and after is not None and dict(before) == after:
            continue
        if (
            slot == "firmware"
            and before is not None
            and after is not None
            and (before.get("model"), before.get("serial")) == (after["model"], after["serial"])
        ):
            continue  # the same firmware part at a new revision: a firmware update, below
        body: dict[str, Any] = {
            "serial": state.serial,
            "action": "part-swapped",
            "by": by,
            "when": when,
        }
        if before is not None:
            body["removed"] = dict(before)
        if after is not None:
            body["installed"] = after
        out.append(body)
    firmware = info.get("firmware")
    if isinstance(firmware, str) and firmware != state.firmware:
        body = {"serial": state.serial, "action": "firmware-updated", "by": by, "when": when}
        if state.firmware:
            body["firmware_from"] = state.firmware
        body["firmware_to"] = firmware
        out.append(body)
    return out


def _part(part: Mapping[str, Any]) -> dict[str, Any]:
    """A part as the event schema has it (the revision only when there is one)."""
    out = {"slot": str(part["slot"]), "model": str(part["model"]), "serial": str(part["serial"])}
    if part.get("revision"):
        out["revision"] = str(part["revision"])
    return out
