"""Nodes and mic modules on the LAN (mDNS hints), and pairing with a nearby node."""

from __future__ import annotations

from typing import Any

from quart import Response, jsonify
from quart_trio import QuartTrio

from node import peerstore
from node.daemon import Node
from node.errors import LinkError, PeerMisbehaved
from node.pairing import PairingCheck, check_nearby, confirm_pairing
from node.roles import Permission
from protocol.event import is_hex32
from webui.auth import Auth, api_error, json_body


def register_nearby_api(app: QuartTrio, node: Node, auth: Auth) -> None:
    def nearby_node(node_id: str) -> dict[str, Any] | None:
        if node.discovery is None:
            return None
        for seen in node.discovery.nearby():
            if seen.node_id == node_id:
                return seen.as_dict()
        return None

    async def check(node_id: str) -> PairingCheck | Response:
        if not is_hex32(node_id):
            return api_error(400, "bad_request", "node ids are 64 lowercase hex characters")
        seen = nearby_node(node_id)
        if seen is None:
            return api_error(404, "not_found", "no such node nearby (discovery off or it left)")
        if not seen["p2p_port"] or not seen["addresses"]:
            return api_error(409, "not_federating", "that node does not accept peer links")
        host = seen["addresses"][0]
        address = f"ws://{host}:{seen['p2p_port']}"
        try:
            return await check_nearby(node, address, node_id)
        except PeerMisbehaved as exc:
            return api_error(
                409,
                "key_mismatch",
                f"the node at {address} does not hold the advertised key: {exc}",
            )
        except LinkError as exc:
            return api_error(502, "unreachable", f"cannot reach {address}: {exc}")

    @app.get("/api/v1/nearby")
    @auth.require(Permission.READ)
    async def nearby() -> Response:
        discovery = node.discovery
        if discovery is None:
            return jsonify({"discovery": False, "nodes": [], "mics": []})
        pinned = {p.pinned_id for p in peerstore.list_peers(node.store) if p.pinned_id is not None}
        nodes = []
        for seen in discovery.nearby():
            entry = seen.as_dict()
            entry["paired"] = seen.node_id in pinned
            nodes.append(entry)
        mics = [m.as_dict() for m in discovery.mics()]
        return jsonify({"discovery": True, "nodes": nodes, "mics": mics})

    @app.post("/api/v1/nearby/<node_id>/pair")
    @auth.require(Permission.MANAGE_PEERS)
    async def pair(node_id: str) -> Response:
        """Prove the node's key and return the code both people compare."""
        result = await check(node_id)
        if isinstance(result, Response):
            return result
        return jsonify({"node_id": result.node_id, "address": result.address, "code": result.code})

    @app.post("/api/v1/nearby/<node_id>/pair/confirm")
    @auth.require(Permission.MANAGE_PEERS)
    async def confirm(node_id: str) -> Response:
        """The people compared codes: prove the key again, check the code, pin the peer."""
        code = str((await json_body()).get("code", ""))
        result = await check(node_id)
        if isinstance(result, Response):
            return result
        if code != result.code:
            return api_error(409, "code_mismatch", "the code differs: do not pair")
        record = await confirm_pairing(node, result)
        response = jsonify(record.as_json())
        response.status_code = 201
        return response
