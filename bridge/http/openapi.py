"""Pieces of OpenAPI 3.1 documents that the bridge's routes share."""

from __future__ import annotations

from typing import Any

__all__ = ["text_response"]


def text_response(description: str) -> dict[str, Any]:
    """A response whose body is plain text."""
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}
