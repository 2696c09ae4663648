"""`bertsent serve`'s FastAPI app: `create_app`, its routes, and every error answered as
`{"error": ..., "error_type": ...}`.

Endpoints (FastAPI, run by uvicorn):

- `POST /predict` `{"inputs": "text" | ["text", ...], "parameters": {"top_k": k, "neutral_band": x}}`: for one
  text `[{"label", "score"}, ...]`, for a list one such list per text (text-embeddings-inference's shape);
  calibrated probabilities, most probable first.
- `POST /`: the same, always a list per text (`[[...]]` for one text): the Inference API's shape, which
  `huggingface_hub.InferenceClient(model="http://HOST:PORT").text_classification(text)` posts and reads.
- `POST /explain` `{"inputs": "text" | [...], "parameters": {"target": label, "n_steps": n}}`: word attributions.
- `GET /health` (503 until the model is loaded, which happens in the background at startup), `GET /info`,
  `GET /metrics` (Prometheus), `GET /docs` and `/openapi.json`, and `GET /`: a page to try the model.

Concurrent requests are scored together (batcher.py). Bad input never gets a 500: 413 (too many texts, too long
a text), 422 (malformed JSON, nested too deep, wrong types, an empty list, an unknown key, text that is not valid
Unicode), 415 (a body that is not application/json), 429 (too many requests in flight, or connections from one
address), 408 (headers or body too slow), 401 (wrong API key). A client that hangs up is counted as 499.
Everything is checked before the batcher sees it, and what still fails there fails its request alone;
`/health` (readiness) and `/live` (liveness) turn 503 when predictions are not being answered.
"""

from pathlib import Path

from bertsent.serving.guard import Gate
from bertsent.serving.limits import Limits
from bertsent.serving.responses import RequestError, answer, error_response, json_response
from bertsent.serving.service import Service

__all__ = ["create_app"]

PAGE_FILE = Path(__file__).resolve().parent / "web" / "index.html"
PREDICT_PATHS = ("/predict", "/")


def create_app(
    model_dir,
    *,
    api_key: str | None = None,
    load_options: dict | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    on_failure=None,
    **limits,
):
    """The FastAPI app serving `model_dir`: a trained model folder (loaded in the background once the app
    starts, with `load_options` as `bertsent.load` takes them), a loaded SentimentModel, or a function that
    returns one. `limits` are `Limits`' fields; `cors_origins` the web pages (origins) allowed to call it from a
    browser (none by default); `on_failure()` is called if the model cannot be loaded. Serve it with
    `uvicorn.Server(bertsent.serving.server.uvicorn_config(app, ...))` for the defences against slow clients."""
    from bertsent.extras import require_extra

    fastapi = require_extra("serve", "create_app")
    from contextlib import asynccontextmanager

    server_limits = Limits(**limits)
    server_limits.check()
    service = Service(model_dir, server_limits, api_key, load_options, on_failure)

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            service.stop()

    from bertsent.environment import package_version

    app = fastapi.FastAPI(
        title="bertsent",
        description="Sentiment of texts, in the shape of Hugging Face's text-classification servers.",
        version=package_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(Gate, service=service)
    if cors_origins:  # outside the gate: a browser's preflight carries no API key
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    _error_handlers(app, service)
    _routes(app, service)
    return app


def _error_handlers(app, service: Service) -> None:
    """Every error in the project's shape, counted by kind; a 500 only for a bug of ours."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestError)
    async def refused(request, exc: RequestError):
        return error_response(exc, service.metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):  # a body the checked routes did not translate
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return error_response(RequestError(422, "validation", message), service.metrics)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return error_response(RequestError(exc.status_code, kind, str(exc.detail)), service.metrics)

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        error = RequestError(500, "internal", f"internal error: {type(exc).__name__}: {exc}")
        return error_response(error, service.metrics)


def _checked_route(service: Service):
    """The route class of the POST endpoints: before FastAPI reads the body, the model must be ready (503), the
    body is read within bounds and parsed with its nesting bounded (requests.BoundedRequest), then counted in
    flight (429 over the limit) and, for predictions, among the batcher's arrivals until it is queued; Pydantic's
    errors on it are said in one line. The anchor: FastAPI's "custom Request and APIRoute class"."""
    import inspect
    from contextlib import nullcontext

    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute

    from bertsent.serving.requests import BoundedRequest, validation_message

    class CheckedRoute(APIRoute):
        def get_route_handler(self):
            handle = super().get_route_handler()
            body_model = inspect.signature(self.endpoint).parameters["body"].annotation
            batched = self.path in PREDICT_PATHS

            async def checked(request):
                service.ready()
                request = BoundedRequest(request.scope, request.receive, service.limits)
                await request.json()  # here, not in FastAPI: it would answer these refusals with a 400
                arrivals = service.batcher.arrivals.expect() if batched else nullcontext()
                with service.in_flight(), arrivals as arrival:
                    request.state.arrival = arrival  # the handler queues it (Batcher.submit)
                    try:
                        return await handle(request)
                    except RequestValidationError as exc:
                        raise RequestError(422, "validation", validation_message(exc.errors(), body_model)) from None

            return checked

    return CheckedRoute


def _routes(app, service: Service) -> None:
    # No `from __future__ import annotations` in this module: FastAPI reads these handlers' annotations, and
    # the request models are imported here, not at the top (the server's packages are an extra).
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse
    from starlette.responses import Response

    from bertsent.serving.requests import REFUSALS, ExplainRequest, PredictRequest, check_texts

    checked = APIRouter(route_class=_checked_route(service), responses=REFUSALS)

    async def scores(body: PredictRequest, request: Request) -> list:
        """The answers of a predict request, one list per text."""
        model, limits = service.model, service.limits
        top_k, band = body.settings(model)
        check_texts(body.texts, limits.max_texts, limits.max_chars)
        rows = await service.predict(body.texts, request.state.arrival)
        return [answer(row, model.classes_, top_k, band) for row in rows]

    @checked.post("/predict", summary="Labels and calibrated scores of texts")
    async def predict(body: PredictRequest, request: Request):
        answers = await scores(body, request)
        return json_response(answers[0] if body.single else answers)

    @checked.post("/", summary="As /predict, a list per text (Inference API shape)")
    async def predict_root(body: PredictRequest, request: Request):
        return json_response(await scores(body, request))

    @checked.post("/explain", summary="Word attributions (integrated gradients)")
    async def explain(body: ExplainRequest):
        limits = service.limits
        target, steps = body.settings(service.model, limits)
        check_texts(body.texts, limits.max_explain_texts, limits.max_chars)
        records = [x.as_dict() for x in await service.explain(body.texts, target, steps)]
        return json_response(records[0] if body.single else records)

    app.include_router(checked)

    @app.get("/health", summary="200 once the model is loaded and predictions are being answered, else 503")
    async def health():
        service.ready()
        return json_response({"status": "ok", "backend": service.model.backend_name})

    @app.get(
        "/live", summary="Liveness: 200 while loading or answering, 503 once the model failed or predictions stall"
    )
    async def live():
        if service.state == "failed" or (service.batcher is not None and service.batcher.health() is not None):
            service.ready()  # its 503, with the reason
        return json_response({"status": service.state})

    @app.get("/info", summary="The model, its labels, limits and versions")
    async def info():
        return json_response(service.info())

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        content, media_type = service.metrics.exposition()
        return Response(content, media_type=media_type)

    page_html: list[str] = []

    @app.get("/", response_class=HTMLResponse, summary="A page to try the model")
    async def page():
        if not page_html:
            page_html.append(PAGE_FILE.read_text(encoding="utf-8"))
        return HTMLResponse(page_html[0])
