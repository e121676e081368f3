"""The URL layout both store apps serve, so the demo compares them route for route."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import Route

__all__ = ("api_routes",)

Endpoint = Callable[..., Any]


def api_routes(
    add: Endpoint, search: Endpoint, get: Endpoint, mark: Endpoint, status: Endpoint
) -> list[Route]:
    """The five API routes on the given endpoints, in the order of the table in :mod:`.app`:
    add a document, list/search, get one, mark it retrieved, retrieval status."""
    return [
        Route("/api/documents", add, methods=["POST"]),
        Route("/api/documents", search, methods=["GET"]),
        Route("/api/documents/{doc_id:int}", get, methods=["GET"]),
        Route("/api/documents/{doc_id:int}/retrieved", mark, methods=["POST"]),
        Route("/api/retrieval/status", status, methods=["GET"]),
    ]
