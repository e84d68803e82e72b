"""Helpers to drive ``talas`` as real subprocesses (the CLI and ``talas run``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

TALAS = [sys.executable, "-m", "node.cli"]


def clean_env() -> dict[str, str]:
    """The environment without TALAS_* settings of whoever runs the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TALAS_")}


def talas(
    data: Path, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    env = clean_env()
    return subprocess.run(
        [*TALAS, "--data", str(data), *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


@dataclass
class Running:
    process: trio.Process
    url: str
    lines: list[str]


@asynccontextmanager
async def running_node(data: Path, *extra: str) -> AsyncIterator[Running]:
    env = clean_env()
    process = await trio.lowlevel.open_process(
        [
            *TALAS,
            "--data",
            str(data),
            "run",
            "--http",
            "127.0.0.1:0",
            "--p2p",
            "127.0.0.1:0",
            *extra,
            # mDNS never runs on this machine's real interfaces in tests.
            *(() if any("discovery" in a for a in extra) else ("--no-discovery",)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    buffer = b""
    lines: list[str] = []
    try:
        with trio.fail_after(30):
            while "web UI" not in "".join(lines):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"node exited early: {lines} {buffer.decode()}"
                buffer += chunk
                *complete, rest = buffer.split(b"\n")
                buffer = rest
                lines += [c.decode() for c in complete]
        url = next(line.split()[-1] for line in lines if "web UI" in line)
        yield Running(process, url, lines)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(10):
            await process.wait()


async def read_rest(process: trio.Process) -> str:
    assert process.stdout is not None
    chunks = []
    with trio.fail_after(20):
        while chunk := await process.stdout.receive_some(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode()


async def talas_async(data: Path, *args: str) -> str:
    env = clean_env()
    with trio.fail_after(30):
        result = await trio.run_process(
            [*TALAS, "--data", str(data), *args], capture_stdout=True, capture_stderr=True, env=env
        )
    return result.stdout.decode()
