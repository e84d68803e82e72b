"""Track upload, checks and playback through the real app over HTTP."""

from __future__ import annotations

import time
from pathlib import Path

import trio

from tests.audio_files import lying_wav, wav_bytes
from tests.webapp import raw_exchange, web_node
from webui.signed_urls import sign_url
from webui.tracks_api import media_key


async def test_upload_play_with_range_and_delete(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        user = await web.add_user("ada", "owner")
        audio = wav_bytes(2.0, rate=44100, channels=2)
        with trio.fail_after(30):
            async with web.signed_in("ada") as ada:
                made = await ada.post(
                    "/api/v1/tracks",
                    params={"title": "Drone", "filename": "../../etc/passwd.wav"},
                    content=audio,
                )
                assert made.status_code == 201, made.text
                track = made.json()
                assert track["author"] == user.author
                body = track["body"]
                assert (body["duration_ms"], body["sample_rate"], body["channels"]) == (
                    2000, 44100, 2,
                )  # fmt: skip
                assert body["mime"] == "audio/wav" and body["size"] == len(audio)
                assert track["filename"] == "passwd.wav"
                assert web.node.blobs.has(body["blob"])

                url = track["url"]
                async with web.client() as anonymous:  # the signature is the credential
                    whole = await anonymous.get(url)
                    assert whole.status_code == 200 and whole.content == audio
                    assert whole.headers["content-type"] == "audio/wav"
                    part = await anonymous.get(url, headers={"Range": "bytes=100-199"})
                    assert part.status_code == 206
                    assert part.content == audio[100:200]
                    assert part.headers["content-range"] == f"bytes 100-199/{len(audio)}"
                    tail = await anonymous.get(url, headers={"Range": "bytes=-10"})
                    assert tail.content == audio[-10:]
                    beyond = await anonymous.get(url, headers={"Range": f"bytes={len(audio) + 5}-"})
                    assert beyond.status_code == 416
                    tampered = url.replace("u=ada", "u=bob")
                    assert (await anonymous.get(tampered)).status_code == 403
                    other_path = url.replace(body["blob"], "0" * 64)
                    assert (await anonymous.get(other_path)).status_code == 403
                    unsigned = url.split("?")[0]
                    assert (await anonymous.get(unsigned)).status_code == 403
                    key = media_key(web.node)
                    path = f"/media/tracks/{body['blob']}"
                    expired = sign_url(key, "GET", path, "ada", int(time.time()) - 1)
                    refused = await anonymous.get(expired)
                    assert refused.status_code == 403
                    assert "expired" in refused.json()["error"]["message"]
                    fresh = sign_url(key, "GET", path, "ada", int(time.time()) + 60)
                    assert (await anonymous.get(fresh)).status_code == 200
                    repeated = await anonymous.get(fresh + "&u=ada")
                    assert repeated.status_code == 403

                listed = (await ada.get("/api/v1/tracks")).json()["items"]
                assert [t["body"]["title"] for t in listed] == ["Drone"]
                gone = await ada.delete(f"/api/v1/tracks/{track['id']}")
                assert gone.status_code == 204
                assert (await ada.get("/api/v1/tracks")).json()["items"] == []
                assert not web.node.blobs.has(body["blob"])
                async with web.client() as anonymous:
                    assert (await anonymous.get(url)).status_code == 404


async def test_hostile_uploads_are_refused_quickly_and_store_nothing(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        await web.add_user("gus", "guest")
        hostile = {
            "lying 4 GB header": lying_wav(),
            "text": b"this is not audio at all\n" * 200,
            "png": b"\x89PNG\r\n\x1a\n" + bytes(2000),
            "random": bytes(range(256)) * 64,
        }
        with trio.fail_after(60):
            async with web.signed_in("ada") as ada:
                for label, content in hostile.items():
                    start = time.monotonic()
                    refused = await ada.post(
                        "/api/v1/tracks", params={"title": label}, content=content
                    )
                    took = time.monotonic() - start
                    assert refused.status_code == 422, (label, refused.text)
                    assert refused.json()["error"]["code"] == "bad_audio"
                    assert refused.json()["error"]["message"], label
                    assert took < 2.0, f"{label} took {took:.2f}s to refuse"
                empty = await ada.post("/api/v1/tracks", params={"title": "e"}, content=b"")
                assert empty.status_code == 422
                # A client declaring more than the cap is refused before it sends it.
                answer = await raw_exchange(
                    web.url,
                    b"POST /api/v1/tracks?title=big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Authorization: Bearer " + web.node.api_token.encode() + b"\r\n"
                    b"Content-Length: "
                    + str(300 * 1024 * 1024).encode()
                    + b"\r\n\r\n"
                    + b"x" * 1000,
                )
                assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
            async with web.signed_in("ada") as ada:
                assert (await ada.get("/api/v1/tracks")).json()["items"] == []
            async with web.signed_in("gus") as gus:
                guest = await gus.post("/api/v1/tracks", params={"title": "g"}, content=wav_bytes())
                assert guest.status_code == 403
        assert list(web.node.blobs.iter_hashes()) == []
        assert list((web.node.data.root / "uploads").iterdir()) == []
