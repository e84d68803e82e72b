"""The command line, driven through real subprocesses on real data dirs."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

import httpx
import pytest
import trio

from protocol.event import parse_event
from tests.processes import (
    TALAS,
    clean_env,
    ok,
    read_rest,
    running_node,
    talas,
    talas_async,
)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    data = tmp_path / "node"
    ok(talas(data, "init", "--name", "Spring Reverb Collective"))
    return data


def test_init_creates_private_keys_and_refuses_to_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "n"
    out = ok(talas(data, "init", "--name", "Cab Mic"))
    assert "Cab Mic" in out
    node_key = data / "keys" / "node.key"
    assert stat.S_IMODE(node_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "keys" / "authors" / "default.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "talas.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    before = node_key.read_bytes()
    again = talas(data, "init")
    assert again.returncode != 0
    assert b"already exists" in again.stderr
    assert node_key.read_bytes() == before


def test_id_reports_node_and_authors(node_dir: Path) -> None:
    info = json.loads(ok(talas(node_dir, "id")))
    assert info["name"] == "Spring Reverb Collective"
    assert len(info["node_id"]) == 64
    assert [a["name"] for a in info["authors"]] == ["default"]
    assert info["authors"][0]["id"] != info["node_id"]
    assert info["addresses"] == {}


def test_post_export_verify_import_round_trip(node_dir: Path, tmp_path: Path) -> None:
    ids = [ok(talas(node_dir, "post", text)).strip() for text in ("first take", "ünïcode 🎛️")]
    exported = ok(talas(node_dir, "events", "export")).encode()
    lines = exported.splitlines()
    assert [parse_event(line).id for line in lines] == ids
    assert [parse_event(line).seq for line in lines] == [1, 2]
    assert ok(talas(node_dir, "events", "verify", "-", stdin=exported)) == ""

    other = tmp_path / "other"
    ok(talas(other, "init"))
    summary = json.loads(ok(talas(other, "events", "import", "-", stdin=exported)))
    assert summary["accepted"] == 2 and summary["rejected"] == 0
    again = json.loads(ok(talas(other, "events", "import", "-", stdin=exported)))
    assert again["accepted"] == 0 and again["duplicates"] == 2
    assert ok(talas(other, "events", "export")).encode() == exported


def test_verify_names_each_bad_line_and_import_keeps_stored_events(
    node_dir: Path, tmp_path: Path
) -> None:
    ok(talas(node_dir, "post", "one"))
    ok(talas(node_dir, "post", "two"))
    good = ok(talas(node_dir, "events", "export")).encode().splitlines()
    tampered = good[1].replace(b'"text":"two"', b'"text":"TWO"')
    forged_sig = good[0][:-20] + (b"0" if good[0][-20:-19] != b"0" else b"1") + good[0][-19:]
    hostile = b"\n".join([good[0], b"{not json", tampered, b'{"a":' * 40 + b"1" + b"}" * 40])
    result = talas(node_dir, "events", "verify", "-", stdin=hostile)
    assert result.returncode == 1
    report = result.stdout.decode().splitlines()
    assert [line.split(":")[0] for line in report] == ["line 2", "line 3", "line 4"]
    assert "not JSON" in report[0]
    assert "body_hash" in report[1]
    assert "nesting" in report[2]

    other = tmp_path / "fresh"
    ok(talas(other, "init"))
    ok(talas(other, "events", "import", "-", stdin=good[0] + b"\n"))
    imported = talas(
        other, "events", "import", "-", stdin=b"\n".join([forged_sig, tampered, b"[]"])
    )
    assert imported.returncode == 1
    summary = json.loads(imported.stdout)
    assert summary["accepted"] == 0 and summary["rejected"] == 3
    assert b"line 1: " in imported.stderr and b"line 3: " in imported.stderr
    assert ok(talas(other, "events", "export")).encode().splitlines() == [good[0]]


def test_gap_is_held_then_filled_by_a_later_import(node_dir: Path, tmp_path: Path) -> None:
    for text in ("a", "b", "c"):
        ok(talas(node_dir, "post", text))
    lines = ok(talas(node_dir, "events", "export")).encode().splitlines()
    other = tmp_path / "other"
    ok(talas(other, "init"))
    held = json.loads(ok(talas(other, "events", "import", "-", stdin=b"\n".join(lines[1:]))))
    assert held["accepted"] == 0 and held["held"] == 2
    assert ok(talas(other, "events", "export")) == ""
    filled = json.loads(ok(talas(other, "events", "import", "-", stdin=lines[0])))
    assert filled["accepted"] == 3
    assert ok(talas(other, "events", "export")).encode().splitlines() == lines


def test_fork_is_reported_and_freezes_the_feed(tmp_path: Path) -> None:
    from protocol.event import sign_event
    from protocol.keys import SigningKey

    key = SigningKey(bytes(range(32)))
    first = sign_event(key, seq=1, prev=None, kind="post", created=1, body={"text": "a"})
    twin = sign_event(key, seq=1, prev=None, kind="post", created=2, body={"text": "b"})
    after = sign_event(key, seq=2, prev=first.id, kind="post", created=3, body={"text": "c"})
    data = tmp_path / "n"
    ok(talas(data, "init"))
    ok(talas(data, "events", "import", "-", stdin=first.wire_bytes()))
    forked = talas(data, "events", "import", "-", stdin=twin.wire_bytes())
    assert forked.returncode == 1 and b"fork" in forked.stderr
    frozen = talas(data, "events", "import", "-", stdin=after.wire_bytes())
    assert frozen.returncode == 1 and b"frozen" in frozen.stderr
    assert ok(talas(data, "events", "export")).encode().splitlines() == [first.wire_bytes()]


def test_insecure_key_file_is_refused_with_the_fix(node_dir: Path) -> None:
    key = node_dir / "keys" / "node.key"
    key.chmod(0o644)
    result = talas(node_dir, "post", "should not be signed")
    assert result.returncode == 2
    message = result.stderr.decode()
    assert str(key) in message and "chmod 600" in message
    run = talas(
        node_dir, "run", "--http", "127.0.0.1:0", "--p2p", "127.0.0.1:0", "--no-discovery",
        timeout=30,
    )  # fmt: skip
    assert run.returncode == 2 and str(key) in run.stderr.decode()


def test_passphrase_protected_node(tmp_path: Path) -> None:
    data = tmp_path / "locked"
    secret = tmp_path / "pass"
    secret.write_bytes(b"correct horse battery staple\n")
    ok(talas(data, "--passphrase-file", str(secret), "init", "--encrypt"))
    no_pass = talas(data, "post", "x", stdin=b"")
    assert no_pass.returncode == 2 and b"passphrase" in no_pass.stderr
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"wrong")
    bad = talas(data, "--passphrase-file", str(wrong), "post", "x")
    assert bad.returncode == 2 and b"wrong passphrase" in bad.stderr
    event_id = ok(talas(data, "--passphrase-file", str(secret), "post", "x")).strip()
    assert parse_event(ok(talas(data, "events", "export")).encode().strip()).id == event_id


def test_missing_node_and_bad_usage(tmp_path: Path) -> None:
    result = talas(tmp_path / "nothing", "post", "x")
    assert result.returncode == 2 and b"talas init" in result.stderr
    assert talas(tmp_path / "nothing", "frobnicate").returncode == 2
    bad_addr = talas(tmp_path / "n", "run", "--http", "nowhere:port")
    assert bad_addr.returncode == 2 and b"HOST:PORT" in bad_addr.stderr


def test_bench_ingest_prints_json_last(tmp_path: Path) -> None:
    out = ok(
        talas(tmp_path, "bench", "ingest", "--events", "400", "--authors", "4", "--workers", "1")
    )
    figures = json.loads(out.splitlines()[-1])
    assert figures["bench"] == "ingest" and figures["events"] == 400
    assert figures["ingest_per_s"] > 0 and figures["raw_verify_per_s"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["ingest_per_s"] / figures["raw_verify_per_s"], abs=0.01
    )


# -- the running node -----------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_serves_api_sees_cli_posts_and_stops_cleanly(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data = tmp_path / "fresh"  # first run initialises it
    async with running_node(data) as node:
        assert node.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=node.url) as client:
            with trio.fail_after(10):
                info = (await client.get("/api/v1/node")).json()
                page = await client.get("/")
            ident = json.loads(await talas_async(data, "id"))
            assert info["node_id"] == ident["node_id"]
            assert ident["addresses"]["http"] == node.url
            assert info["events"] == {"count": 0, "latest": None}
            assert page.headers["content-security-policy"].startswith("default-src 'none'")
            assert '<script type="module" src="/static/js/main.js">' in page.text

            event_id = (await talas_async(data, "post", "made while the node runs")).strip()
            start = trio.current_time()
            with trio.fail_after(5):
                while True:
                    info = (await client.get("/api/v1/node")).json()
                    if info["events"]["latest"] is not None:
                        break
                    await trio.sleep(0.05)
            seen_after = trio.current_time() - start
            assert info["events"]["latest"]["id"] == event_id
            assert info["events"]["count"] == 1
            assert seen_after < 1.0, f"node saw the CLI post only after {seen_after:.2f}s"

            rebinding = await client.get("/api/v1/node", headers={"Host": "attacker.example"})
            assert rebinding.status_code == 421
            assert rebinding.json()["error"]["code"] == "bad_host"

        second = await _talas_run_refused(data)
        assert "already running" in second

        node.process.send_signal(signum)
        rest = await read_rest(node.process)
        with trio.fail_after(10):
            code = await node.process.wait()
        assert code == 0, rest
        assert "stopped" in rest
    ident = json.loads(await talas_async(data, "id"))
    assert ident["addresses"] == {}


async def _talas_run_refused(data: Path) -> str:
    env = clean_env()
    with trio.fail_after(30):
        result = await trio.run_process(
            [
                *TALAS,
                "--data",
                str(data),
                "run",
                "--http",
                "127.0.0.1:0",
                "--p2p",
                "127.0.0.1:0",
                "--no-discovery",
            ],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
    assert result.returncode == 2
    return result.stderr.decode()


async def test_rate_limit_answers_429(tmp_path: Path) -> None:
    async with (
        running_node(tmp_path / "n", "--rate-limit", "50") as node,
        httpx.AsyncClient(base_url=node.url) as client,
    ):
        statuses: list[int] = []
        with trio.fail_after(20):
            for _ in range(300):
                response = await client.get("/api/v1/node")
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert int(response.headers["retry-after"]) >= 1
                    break
        assert 429 in statuses
        assert statuses[0] == 200


def test_user_and_token_commands(tmp_path: Path) -> None:
    data = tmp_path / "n"
    ok(talas(data, "init"))
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery\n")
    added = ok(talas(data, "user", "add", "ada", "--role", "owner", "--password-file", str(secret)))
    assert added.startswith("added ada (owner), author ")
    ok(talas(data, "user", "add", "mia", stdin=b"another password\n"))
    short = talas(data, "user", "add", "bob", stdin=b"short\n")
    assert short.returncode == 1 and b"passwords are" in short.stderr
    bad_role = talas(data, "user", "add", "bob", "--role", "root", stdin=b"x" * 12)
    assert bad_role.returncode == 2
    users = json.loads(ok(talas(data, "user", "list", "--json")))
    assert [(u["name"], u["role"]) for u in users] == [("ada", "owner"), ("mia", "member")]
    assert users[0]["author"] != users[1]["author"]

    token = ok(talas(data, "token", "create", "--user", "mia", "--label", "ci")).strip()
    listed = json.loads(ok(talas(data, "token", "list")))
    assert [(t["user"], t["label"]) for t in listed] == [("mia", "ci")]
    assert token not in json.dumps(listed)
    assert talas(data, "token", "revoke", "talas_nope").returncode == 2
    ok(talas(data, "token", "revoke", listed[0]["id"]))
    assert json.loads(ok(talas(data, "token", "list"))) == []

    last_owner = talas(data, "user", "remove", "ada")
    assert last_owner.returncode == 1 and b"at least one owner" in last_owner.stderr
    ok(talas(data, "user", "remove", "mia"))
    assert [u["name"] for u in json.loads(ok(talas(data, "user", "list", "--json")))] == ["ada"]
