"""Serves the normative OpenAPI 3.1 document kept in specs/openapi.json."""

from __future__ import annotations

from pathlib import Path

from quart import Response
from quart_trio import QuartTrio

from webui.auth import api_error

SPEC = Path(__file__).resolve().parent.parent / "specs" / "openapi.json"


def register_openapi(app: QuartTrio) -> None:
    @app.get("/api/v1/openapi.json")
    async def openapi() -> Response:
        try:
            document = SPEC.read_bytes()
        except OSError:
            return api_error(404, "not_found", f"the API description is missing ({SPEC})")
        return Response(document, content_type="application/json")
