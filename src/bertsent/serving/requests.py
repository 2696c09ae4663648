"""What a request may hold: the bodies of `POST /predict` (and `POST /`) and `POST /explain`, declared once as
Pydantic models (the handlers' types and the OpenAPI document's schemas, anchor: infinity's
fastapi_schemas/pymodels.py); the body read within bounds (415, 413 while reading, 499) and parsed with its
nesting bounded (422) before FastAPI sees it; the checks against the server's limits (413) and the model; and
Pydantic's errors said in one line, as every other refusal."""

import json
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo
from starlette.requests import ClientDisconnect, Request

from bertsent.serving.limits import Limits
from bertsent.serving.responses import RequestError

MAX_DEPTH = 8  # JSON nesting a request may have (it needs 3): deeper is refused
TOO_DEEP = f"JSON nested more than {MAX_DEPTH} levels deep; a request needs 3"
EXAMPLE = "A warm, funny film; I loved it."


class _Strict(BaseModel):
    # strict: "2" and true are no top_k (Pydantic would take them as 2 and 1); extra keys are refused
    model_config = ConfigDict(extra="forbid", strict=True)


class PredictParameters(_Strict):
    top_k: int | None = Field(default=None, ge=1, description="the k most probable labels (default: all)")
    neutral_band: float | None = Field(
        default=None, ge=0, lt=1, description="binary models: unsure texts answered neutral (default: the server's)"
    )
    function_to_apply: Literal["softmax"] | None = Field(default=None, description="calibrated softmax scores only")


class ExplainParameters(_Strict):
    target: str | None = Field(default=None, description="the label to explain (default: the predicted one)")
    n_steps: int | None = Field(default=None, ge=1, description="integration steps (default: by the text's length)")


class _Texts(_Strict):
    parameters_model: ClassVar[type[_Strict]]  # the model of its "parameters"
    inputs: str | Annotated[list[str], Field(min_length=1)] = Field(description="a text, or a list of texts")

    @property
    def texts(self) -> list[str]:
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs

    @property
    def single(self) -> bool:
        """One text given (not a list): answered with one answer, not a list of them."""
        return isinstance(self.inputs, str)


class PredictRequest(_Texts):
    """`{"inputs": "text" | ["text", ...], "parameters": {...}}`, as Hugging Face's text-classification servers."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": EXAMPLE, "parameters": {"top_k": 2}}]})
    parameters: PredictParameters | None = None
    parameters_model: ClassVar[type[_Strict]] = PredictParameters

    def settings(self, model) -> tuple[int | None, float | None]:
        """top_k (None: every class) and the neutral band (default: the server's)."""
        given = self.parameters or PredictParameters()
        band = given.neutral_band if given.neutral_band is not None else model.neutral_band
        return given.top_k, band


class ExplainRequest(_Texts):
    """`{"inputs": "text" | ["text", ...], "parameters": {"target": label, "n_steps": n}}`."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": EXAMPLE}]})
    parameters: ExplainParameters | None = None
    parameters_model: ClassVar[type[_Strict]] = ExplainParameters

    def settings(self, model, limits: Limits) -> tuple[str | None, int | None]:
        """The label to explain (None: the predicted one) and n_steps (None: by the text's length)."""
        given = self.parameters or ExplainParameters()
        if given.target is not None and given.target not in model.classes_:
            labels = ", ".join(model.classes_)
            raise RequestError(422, "validation", f"target {given.target!r}: the model's labels are {labels}")
        if given.n_steps is not None and given.n_steps > limits.max_explain_steps:
            most = limits.max_explain_steps
            raise RequestError(422, "validation", f"n_steps {given.n_steps}: must be a whole number from 1 to {most}")
        return given.target, given.n_steps


class Refusal(BaseModel):
    """The body of every refused request (responses.RequestError), as the OpenAPI document shows it."""

    error: str = Field(description="what is wrong, and what to do")
    error_type: str = Field(description="validation, too_large, unsupported_media_type, unauthorized, ...")


# The refusals a POST route may answer, for the OpenAPI document (in place of FastAPI's own 422 body).
REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": Refusal, "description": description}
    for status, description in {
        401: "no or a wrong API key",
        408: "the body did not arrive in time",
        413: "too many texts, too long a text, too large a body",
        415: "a body that is not application/json",
        422: "malformed JSON, nested too deep, wrong types, unknown keys, text that is not valid Unicode",
        429: "too many requests in flight",
        503: "the model is not loaded yet, or predictions are not being answered",
    }.items()
}


def validation_message(errors: list[dict], body_model: type[_Texts]) -> str:
    """Pydantic's errors for a request body (FastAPI's locations: "body", then the keys), as one line."""

    def where(error) -> tuple:
        loc = tuple(error.get("loc", ()))
        return loc[1:] if loc[:1] == ("body",) else loc

    # an unknown key first, as a person reads a body: {"text": ...} is a misnamed "inputs", not a missing one
    unknown = [e for e in errors if e.get("type") == "extra_forbidden" and len(where(e)) == 1]
    first = (unknown or errors or [{"loc": (), "type": ""}])[0]
    loc, kind = where(first), first.get("type", "")
    if not loc:
        return 'the body must be a JSON object: {"inputs": "text" or ["text", ...]}'
    if loc[0] not in body_model.model_fields:
        return f"unknown key {loc[0]!r}: the body takes {' and '.join(body_model.model_fields)}"
    if loc[0] == "inputs":
        if kind == "missing":
            return 'missing "inputs": give a text or a list of texts'
        if any(e.get("type") == "too_short" for e in errors if where(e)[:1] == ("inputs",)):
            return '"inputs" is an empty list: give at least one text'
        return '"inputs" must be a string or a list of strings'
    if len(loc) == 1:
        return '"parameters" must be an object'
    name = loc[1]
    if kind == "extra_forbidden":
        return f"unknown parameter {name!r}; parameters are {', '.join(body_model.parameters_model.model_fields)}"
    given = repr(first.get("input"))
    given = given if len(given) <= 60 else given[:57] + "..."  # a body can be megabytes: not echoed whole
    field = body_model.parameters_model.model_fields.get(name)
    return f"{name} {given}: {_rule(field) if field is not None else first.get('msg', 'invalid')}"


def _rule(field: FieldInfo) -> str:
    """What a parameter must be, said from its declaration: "must be a whole number of at least 1"."""
    kind = next((k for k in get_args(field.annotation) if k is not type(None)), field.annotation)
    if get_origin(kind) is Literal:
        return "must be " + " or ".join(repr(value) for value in get_args(kind))
    nouns: dict[Any, str] = {int: "a whole number", float: "a number", str: "a string"}
    noun = nouns.get(kind, "valid")
    bounds = {name: getattr(m, name) for m in field.metadata for name in ("ge", "lt") if hasattr(m, name)}
    if "ge" in bounds and "lt" in bounds:
        return f"must be {noun} in [{bounds['ge']}, {bounds['lt']})"
    if "ge" in bounds:
        return f"must be {noun} of at least {bounds['ge']}"
    return f"must be {noun}"


def check_texts(texts: list[str], max_texts: int, max_chars: int) -> None:
    """Texts a server takes: at most `max_texts` of at most `max_chars` characters (else 413), each encodable as
    UTF-8 as the tokenizer needs it (JSON can carry a lone surrogate, \\ud800, which no tokenizer accepts: 422)."""
    if len(texts) > max_texts:
        raise RequestError(
            413, "too_large", f"{len(texts)} texts in one request; this server takes at most {max_texts}"
        )
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestError(
                422,
                "validation",
                f"text {i} cannot be encoded as UTF-8: a lone surrogate {text[exc.start]!a} at character "
                f"{exc.start}; send valid Unicode text",
            ) from None
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > max_chars:
        raise RequestError(
            413,
            "too_large",
            f"text {longest} has {len(texts[longest])} characters; this server takes at most {max_chars} per text",
        )


class BoundedRequest(Request):
    """A request whose body is read within bounds and parsed with its nesting bounded. FastAPI reads a body
    through `body()` and `json()`; the route calls `json()` before FastAPI does, so that these refusals reach
    the client as they are (FastAPI answers any error raised while it reads a body with a 400)."""

    def __init__(self, scope, receive, limits: Limits):
        super().__init__(scope, receive)
        self.limits = limits

    async def body(self) -> bytes:
        if not hasattr(self, "_bounded_body"):
            self._bounded_body = await read_body(self, self.limits)
        return self._bounded_body

    async def json(self):
        if not hasattr(self, "_bounded_json"):
            self._bounded_json = parse_json(await self.body())
        return self._bounded_json


async def read_body(request: Request, limits: Limits) -> bytes:
    """The body, refused (413) once it is larger than max_texts texts of max_chars could make it: by its
    Content-Length before reading it, and while reading when it has none (chunked), so that no request can make
    the server hold more than that."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":  # also keeps browsers' preflight-free "simple requests" (text/plain) out
        shown = f"Content-Type {media!r}" if media else "no Content-Type"
        raise RequestError(415, "unsupported_media_type", f"{shown}: send the body as application/json")
    most = limits.max_texts * (limits.max_chars * 12 + 16) + 65_536  # a character: up to 12 bytes of JSON
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        raise RequestError(413, "too_large", f"a body of {declared} bytes; this server takes at most {most}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > most:
                raise RequestError(
                    413, "too_large", f"a body of more than {most} bytes; this server takes at most {most}"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(499, "disconnected", "the client closed the connection before its body arrived") from None
    return b"".join(chunks)


def parse_json(body: bytes):
    """The body's JSON value; malformed or nested deeper than MAX_DEPTH: 422."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(422, "validation", f"malformed JSON: {exc}") from None
    except RecursionError:  # nested deeper than Python parses
        raise RequestError(422, "validation", TOO_DEEP) from None
    if _depth(payload) > MAX_DEPTH:
        raise RequestError(422, "validation", TOO_DEEP)
    return payload


def _depth(value) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a string: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
