"""What the server answers: `RequestError` (a refusal: status, `error_type`, message) and its JSON body
`{"error", "error_type"}`, a prediction's `[{"label", "score"}, ...]`, and JSON bodies as UTF-8."""

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the command line imports this package without numpy
    import numpy as np


class RequestError(Exception):
    """A request the server refuses: its status, its kind (`error_type`) and a message for the client."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_response(error: RequestError, metrics=None):
    """The refusal's JSON answer, counted in `metrics.errors` by kind."""
    from starlette.responses import JSONResponse

    if metrics is not None:
        metrics.errors.labels(error.kind).inc()
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse({"error": error.message, "error_type": error.kind}, status_code=error.status, headers=headers)


def raw_error(status: int, kind: str, message: str) -> bytes:
    """A whole HTTP/1.1 error answer, for a connection refused before any request was read."""
    from http import HTTPStatus

    body = json.dumps({"error": message, "error_type": kind}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def json_response(payload, status: int = 200):
    from starlette.responses import Response

    return Response(json.dumps(payload, ensure_ascii=False).encode("utf-8"), status, media_type="application/json")


def answer(row: "np.ndarray", classes: list[str], top_k: int | None, neutral_band: float | None) -> list[dict]:
    """One text's `[{"label", "score"}, ...]`, most probable first. With a neutral band a binary model's
    unsure text is answered "neutral" first, its score 1 minus the two classes' margin."""
    import numpy as np

    from bertsent.evaluation.metrics import NEUTRAL

    order = np.argsort(-row, kind="stable")
    out = [{"label": classes[i], "score": float(row[i])} for i in order]
    if neutral_band and len(classes) == 2 and row.max() < 0.5 + neutral_band / 2:
        out.insert(0, {"label": NEUTRAL, "score": float(1 - (row.max() - row.min()))})
    return out[:top_k] if top_k else out
