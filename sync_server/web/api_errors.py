"""What the JSON API's error responses carry, declared so the OpenAPI description is complete.

The app answers every refused API request with ``{"detail": ...}`` (sync_server/web/app.py): a
Chinese sentence for an HTTP error, a list of ``field: problem`` lines when the request does not
match the description (422). Routes list these under ``responses=`` so clients (and schemathesis,
tests/web/test_openapi.py) know the shape of every status an operation can answer with.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["InvalidRequest", "Problem", "problem_responses"]


class Problem(BaseModel):
    """A request the API refused: ``detail`` says why, for people (in Chinese)."""

    detail: str = Field(description="Why the request was refused, in Chinese.")


class InvalidRequest(BaseModel):
    """A request that does not match the description: one ``field: problem`` line per mistake."""

    detail: list[str] = Field(description="One line per problem: `field: what is wrong`.")


_DESCRIPTIONS = {
    400: "The request body could not be read as JSON (not UTF-8 text).",
    403: "Refused: a cross-site browser request.",
    404: "No such locker, service or case, or the case token does not open it.",
    409: "Not possible in the case's current state.",
    422: "The request does not match this description.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for ``statuses``: a :class:`Problem` body, for 422 an
    :class:`InvalidRequest`."""
    return {
        status: {
            "model": InvalidRequest if status == 422 else Problem,
            "description": _DESCRIPTIONS.get(status, "Refused."),
        }
        for status in statuses
    }
