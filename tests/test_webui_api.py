"""The JSON API against the real app over HTTP: accounts, roles, CSRF, feed, market, courses."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import trio

from protocol.event import sign_event
from tests.conftest import signing_key
from tests.webapp import PASSWORD, raw_exchange, web_node


async def test_first_run_setup_creates_the_owner_once(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web, web.client() as client:
        with trio.fail_after(20):
            assert (await client.get("/api/v1/setup")).json() == {"needed": True}
            assert (await client.get("/api/v1/me")).status_code == 401
            wrong = await client.post(
                "/api/v1/setup",
                json={"setup_code": "nope", "username": "ada", "password": PASSWORD},
            )
            assert wrong.status_code == 403
            assert wrong.json()["error"]["code"] == "bad_setup_code"
            made = await client.post(
                "/api/v1/setup",
                json={"setup_code": web.node.api_token, "username": "ada", "password": PASSWORD},
            )
            assert made.status_code == 201, made.text
            assert made.json()["user"]["role"] == "owner"
            me = await client.get("/api/v1/me")
            assert me.json()["user"]["name"] == "ada"
            assert "manage_users" in me.json()["permissions"]
            again = await client.post(
                "/api/v1/setup",
                json={"setup_code": web.node.api_token, "username": "eve", "password": PASSWORD},
            )
            assert again.status_code == 409
            assert (await client.get("/api/v1/setup")).json() == {"needed": False}


async def test_sign_in_cookie_is_httponly_strict_and_logout_revokes_it(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web, web.client() as client:
        await web.add_user("ada", "owner")
        with trio.fail_after(20):
            bad = await client.post("/api/v1/session", json={"username": "ada", "password": "x"})
            assert bad.status_code == 401 and bad.json()["error"]["code"] == "bad_credentials"
            nobody = await client.post(
                "/api/v1/session", json={"username": "zed", "password": PASSWORD}
            )
            assert nobody.status_code == 401
            assert nobody.json() == bad.json()  # the same answer: no user enumeration

            client.cookies.set("talas_session", "planted-by-attacker")
            good = await client.post(
                "/api/v1/session", json={"username": "ada", "password": PASSWORD}
            )
            assert good.status_code == 200
            cookie = good.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            session_id = good.cookies["talas_session"]
            assert session_id != "planted-by-attacker" and len(session_id) >= 40
            csrf = good.json()["csrf"]
            # The jar now holds both cookies; keep only the server's, as a browser would.
            client.cookies = httpx.Cookies({"talas_session": session_id})

            assert (await client.get("/api/v1/me")).json()["csrf"] == csrf
            refused = await client.delete("/api/v1/session")
            assert refused.status_code == 403  # no CSRF header
            out = await client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
            assert out.status_code == 204

        # Replaying the old cookie after logout gets nothing: revoked server-side.
        async with web.client(cookies={"talas_session": session_id}) as replay:
            assert (await replay.get("/api/v1/me")).status_code == 401


async def test_csrf_and_origin_are_checked_for_cookie_writes_not_for_bearer(
    tmp_path: Path,
) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        with trio.fail_after(20):
            async with web.signed_in("ada") as browser:
                csrf = browser.headers.pop("X-CSRF-Token")
                post = {"text": "hello"}
                no_token = await browser.post("/api/v1/posts", json=post)
                assert no_token.status_code == 403
                assert no_token.json()["error"]["code"] == "csrf"
                wrong = await browser.post(
                    "/api/v1/posts", json=post, headers={"X-CSRF-Token": csrf + "x"}
                )
                assert wrong.status_code == 403
                cross = await browser.post(
                    "/api/v1/posts",
                    json=post,
                    headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
                )
                assert cross.status_code == 403
                feed = (await browser.get("/api/v1/feed")).json()
                assert feed["items"] == []  # nothing refused was stored
                ok = await browser.post(
                    "/api/v1/posts",
                    json=post,
                    headers={"X-CSRF-Token": csrf, "Origin": web.url},
                )
                assert ok.status_code == 201, ok.text
            async with web.token_client("ada") as script:
                assert (await script.post("/api/v1/posts", json={"text": "bot"})).status_code == 201
                texts = [
                    i["body"]["text"] for i in (await script.get("/api/v1/feed")).json()["items"]
                ]
                assert texts == ["bot", "hello"]


async def test_roles_decide_who_may_post_manage_and_moderate(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        owner = await web.add_user("ada", "owner")
        await web.add_user("gus", "guest")
        member = await web.add_user("mia", "member")
        await web.add_user("abe", "admin")
        collective = web.node.identity.author_info("default").public.hex()
        with trio.fail_after(30):
            async with web.signed_in("gus") as guest:
                assert (await guest.get("/api/v1/feed")).status_code == 200
                refused = await guest.post("/api/v1/posts", json={"text": "hi"})
                assert refused.status_code == 403
                assert refused.json()["error"]["code"] == "forbidden"
                assert (await guest.post("/api/v1/offers", json={})).status_code == 403

            async with web.signed_in("mia") as mia:
                mine = await mia.post("/api/v1/posts", json={"text": "mine"})
                assert mine.status_code == 201
                assert mine.json()["author"] == member.author
                assert mine.json()["author_name"] == "mia"
                as_coll = await mia.post("/api/v1/posts", json={"text": "c", "as": "collective"})
                assert as_coll.status_code == 403
                add = await mia.post(
                    "/api/v1/users", json={"name": "x1", "role": "member", "password": PASSWORD}
                )
                assert add.status_code == 403

            async with web.signed_in("abe") as abe:
                coll = await abe.post("/api/v1/posts", json={"text": "news", "as": "collective"})
                assert coll.status_code == 201 and coll.json()["author"] == collective
                made_owner = await abe.post(
                    "/api/v1/users", json={"name": "o2", "role": "owner", "password": PASSWORD}
                )
                assert made_owner.status_code == 403
                assert (await abe.delete("/api/v1/users/ada")).status_code == 403
                made = await abe.post(
                    "/api/v1/users", json={"name": "newbie", "role": "member", "password": PASSWORD}
                )
                assert made.status_code == 201
                assert made.json()["author"] not in (owner.author, member.author)
                promote = await abe.patch("/api/v1/users/newbie", json={"role": "admin"})
                assert promote.json()["role"] == "admin"
                # Moderation: an admin deletes a member's post; it leaves the feed.
                removed = await abe.delete(f"/api/v1/events/{mine.json()['id']}")
                assert removed.status_code == 204
                texts = [i["body"]["text"] for i in (await abe.get("/api/v1/feed")).json()["items"]]
                assert texts == ["news"]

            async with web.signed_in("mia") as mia:
                other = (await mia.get("/api/v1/feed")).json()["items"][0]
                assert (await mia.delete(f"/api/v1/events/{other['id']}")).status_code == 403

            async with web.signed_in("ada") as ada:
                assert (await ada.delete("/api/v1/users/mia")).status_code == 204
                names = [u["name"] for u in (await ada.get("/api/v1/users")).json()["items"]]
                assert names == ["abe", "ada", "gus", "newbie"]
                last_owner = await ada.patch("/api/v1/users/ada", json={"role": "member"})
                assert last_owner.status_code == 409


async def test_feed_shows_own_and_followed_authors_newest_first_with_cursors(
    tmp_path: Path,
) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        followed, stranger = signing_key(201), signing_key(202)
        now = 1_900_000_000_000
        # A followed author who dates a post far in the future does not stay on top.
        outside = [
            sign_event(followed, seq=1, prev=None, kind="post", created=now * 10,
                       body={"text": "from the future"}),
            sign_event(stranger, seq=1, prev=None, kind="post", created=now,
                       body={"text": "relayed, never followed"}),
        ]  # fmt: skip
        await trio.to_thread.run_sync(lambda: web.node.store.ingest(outside, now_ms=1))
        with trio.fail_after(30):
            async with web.signed_in("ada") as ada:
                follow = await ada.post("/api/v1/follows", json={"author": followed.id})
                assert follow.status_code == 200, follow.text
                for n in range(45):
                    made = await ada.post("/api/v1/posts", json={"text": f"post {n}"})
                    assert made.status_code == 201
                seen: list[str] = []
                cursor = None
                pages = 0
                while True:
                    params = {"limit": "20", **({"cursor": cursor} if cursor else {})}
                    page = (await ada.get("/api/v1/feed", params=params)).json()
                    seen += [i["body"]["text"] for i in page["items"]]
                    pages += 1
                    cursor = page["next"]
                    if cursor is None:
                        break
                assert pages == 3
                assert seen[:2] == ["post 44", "post 43"]
                assert seen[-1] == "from the future"  # counted at its arrival time (1 ms)
                assert len(seen) == len(set(seen)) == 46
                assert "relayed, never followed" not in seen
                bad = await ada.get("/api/v1/feed", params={"cursor": "!!!"})
                assert bad.status_code == 400
                assert (await ada.get("/api/v1/feed", params={"limit": "1000"})).status_code == 400

                profile = (await ada.get(f"/api/v1/authors/{followed.id}")).json()
                assert profile["following"] is True
                assert profile["counts"]["post"] == 1
                items = (
                    await ada.get(f"/api/v1/authors/{followed.id}/items", params={"kind": "post"})
                ).json()
                assert [i["body"]["text"] for i in items["items"]] == ["from the future"]


async def test_offers_and_courses_are_validated_listed_and_fetched(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        remote = signing_key(203)
        federated = sign_event(
            remote, seq=1, prev=None, kind="offer", created=1_800_000_000_000,
            body={"title": "Spring reverb", "category": "gear", "offered": "tank",
                  "wanted": "preamp", "condition": "good"},
        )  # fmt: skip
        await trio.to_thread.run_sync(lambda: web.node.store.ingest([federated], now_ms=1))
        with trio.fail_after(30):
            async with web.signed_in("ada") as ada:
                await ada.post("/api/v1/follows", json={"author": remote.id})
                missing = await ada.post("/api/v1/offers", json={"title": "no fields"})
                assert missing.status_code == 400
                assert "required" in missing.json()["error"]["message"]
                offer = await ada.post(
                    "/api/v1/offers",
                    json={"title": "Ribbon mic", "category": "gear", "offered": "R-1",
                          "wanted": "tape delay", "condition": "fair"},
                )  # fmt: skip
                assert offer.status_code == 201, offer.text

                def titles(response: httpx.Response) -> list[str]:
                    return [i["body"]["title"] for i in response.json()["items"]]

                assert titles(await ada.get("/api/v1/offers")) == ["Ribbon mic", "Spring reverb"]
                local = await ada.get("/api/v1/offers", params={"scope": "local"})
                assert titles(local) == ["Ribbon mic"]
                remote_only = await ada.get("/api/v1/offers", params={"scope": "federated"})
                assert titles(remote_only) == ["Spring reverb"]
                assert (await ada.get("/api/v1/offers", params={"scope": "x"})).status_code == 400

                course = await ada.post(
                    "/api/v1/courses",
                    json={"title": "Mic placement", "level": "beginner",
                          "lessons": [{"title": "Distance", "text": "Start at 20 cm"},
                                      {"title": "Angle", "minutes": 10}]},
                )  # fmt: skip
                assert course.status_code == 201, course.text
                fetched = await ada.get(f"/api/v1/courses/{course.json()['id']}")
                lessons = [lesson["title"] for lesson in fetched.json()["body"]["lessons"]]
                assert lessons == ["Distance", "Angle"]
                assert (await ada.get(f"/api/v1/courses/{offer.json()['id']}")).status_code == 404
                empty = await ada.post("/api/v1/courses", json={"title": "x", "lessons": []})
                assert empty.status_code == 400
                assert len((await ada.get("/api/v1/courses")).json()["items"]) == 1


async def test_login_attempts_are_rate_limited(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web, web.client() as client:
        await web.add_user("ada", "owner")
        statuses = []
        with trio.fail_after(30):
            for _ in range(14):
                response = await client.post(
                    "/api/v1/session", json={"username": "ada", "password": "wrong guess"}
                )
                statuses.append(response.status_code)
            assert statuses[:10] == [401] * 10
            assert statuses[-1] == 429
            assert int(response.headers["retry-after"]) >= 1
            # Even the right password waits out the limit.
            right = await client.post(
                "/api/v1/session", json={"username": "ada", "password": PASSWORD}
            )
            assert right.status_code == 429


async def test_hostile_requests_get_clear_errors_and_change_nothing(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        with trio.fail_after(30):
            async with web.signed_in("ada") as ada:
                huge = await raw_exchange(
                    web.url,
                    b"POST /api/v1/posts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Authorization: Bearer " + web.node.api_token.encode() + b"\r\n"
                    b"Content-Length: " + str(2 << 20).encode() + b"\r\n\r\n" + b"x" * 1000,
                )
                assert huge.startswith(b"HTTP/1.1 413"), huge[:100]
                assert b"connection: close" in huge.lower()
                not_json = await ada.post("/api/v1/posts", content=b"\xff\xfe{")
                assert not_json.status_code == 400
                bad_kind = await ada.post("/api/v1/posts", json={"text": ""})
                assert bad_kind.status_code == 400
                bad_as = await ada.post("/api/v1/posts", json={"text": "x", "as": "root"})
                assert bad_as.status_code == 400
                bad_id = await ada.delete("/api/v1/events/../../etc")
                assert bad_id.status_code in (400, 404)
                unknown = await ada.get("/api/v1/authors/" + "z" * 64)
                assert unknown.status_code == 400
                assert (await ada.get("/api/v1/feed")).json()["items"] == []
                assert (await ada.get("/static/../../node/accounts.py")).status_code == 404
                shell = await ada.get("/")
                assert shell.status_code == 200
                assert "script-src 'self'" in shell.headers["content-security-policy"]


async def test_profiles_blocks_and_the_service_worker_version(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        ada = await web.add_user("ada", "owner")
        await web.add_user("mia", "member")
        stranger = signing_key(204)
        with trio.fail_after(30):
            async with web.signed_in("mia") as mia:
                made = await mia.post("/api/v1/profile", json={"name": "Mia K", "bio": "cellist"})
                assert made.status_code == 201, made.text
                assert (
                    await mia.post("/api/v1/profile", json={"bio": "no name"})
                ).status_code == 400
                assert (await mia.get("/api/v1/blocks")).status_code == 403
            async with web.signed_in("ada") as client:
                author = (await client.get(f"/api/v1/authors/{made.json()['author']}")).json()
                assert (author["name"], author["bio"], author["local_user"]) == (
                    "Mia K", "cellist", "mia",
                )  # fmt: skip
                assert author["id"] != ada.author
                blocked = await client.post(
                    "/api/v1/blocks", json={"target": stranger.id, "what": "author"}
                )
                assert blocked.status_code == 200
                listed = (await client.get("/api/v1/blocks")).json()["items"]
                assert listed == [{"target": stranger.id, "what": "author"}]
                follow = await client.post("/api/v1/follows", json={"author": stranger.id})
                assert follow.status_code == 409
                assert (await client.delete(f"/api/v1/blocks/{stranger.id}")).status_code == 204
                assert (await client.delete(f"/api/v1/blocks/{stranger.id}")).status_code == 404
                assert (await client.get("/api/v1/blocks")).json()["items"] == []

                worker = await client.get("/sw.js")
                assert worker.headers["service-worker-allowed"] == "/"
                assert "const VERSION = 'dev'" not in worker.text
                assert re.search(r"const VERSION = '[0-9a-f]{16}';", worker.text)
                manifest = await client.get("/manifest.webmanifest")
                assert manifest.headers["content-type"] == "application/manifest+json"


async def test_feed_names_follow_profile_changes(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        remote = signing_key(205)
        t = 1_800_000_000_000
        first = sign_event(remote, seq=1, prev=None, kind="profile", created=t,
                           body={"name": "Old Name"})  # fmt: skip
        post = sign_event(remote, seq=2, prev=first.id, kind="post", created=t + 1,
                          body={"text": "hello"})  # fmt: skip
        renamed = sign_event(remote, seq=3, prev=post.id, kind="profile", created=t + 2,
                             body={"name": "New <Name>"})  # fmt: skip
        await trio.to_thread.run_sync(lambda: web.node.store.ingest([first, post], now_ms=1))
        with trio.fail_after(20):
            async with web.signed_in("ada") as ada:
                await ada.post("/api/v1/follows", json={"author": remote.id})
                item = (await ada.get("/api/v1/feed")).json()["items"][0]
                assert item["author_name"] == "Old Name" and item["local"] is False
                await trio.to_thread.run_sync(lambda: web.node.store.ingest([renamed], now_ms=2))
                while True:  # the store watcher notices within its poll interval
                    item = (await ada.get("/api/v1/feed")).json()["items"][0]
                    if item["author_name"] != "Old Name":
                        break
                    await trio.sleep(0.05)
                assert item["author_name"] == "New <Name>"
