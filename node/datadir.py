"""Where a node keeps its files, and how that place is chosen.

``--data DIR`` wins, then ``$TALAS_DATA``, then the platform's user data dir
(``~/.local/share/talas`` on Linux).  Everything private lives below it, so it
is created owner-only (0700).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from node.errors import LocalError


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def resolve(cls, explicit: str | None = None) -> DataDir:
        chosen = explicit or os.environ.get("TALAS_DATA") or platformdirs.user_data_dir("talas")
        return cls(Path(chosen).expanduser().absolute())

    @property
    def database(self) -> Path:
        return self.root / "talas.db"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def runtime_file(self) -> Path:
        """Written by a running node: its pid and addresses, for ``talas id``."""
        return self.root / "run.json"

    @property
    def api_token_file(self) -> Path:
        """Bearer token for the JSON API's writes (owner-only)."""
        return self.root / "api-token"

    @property
    def lock_file(self) -> Path:
        return self.root / "run.lock"

    def ensure(self) -> None:
        """Create the directory owner-only, or tighten it if it was just made."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"cannot create data directory {self.root}: {exc}") from exc
        if not self.root.is_dir():
            raise LocalError(f"data path {self.root} exists and is not a directory")
