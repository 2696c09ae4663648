"""`bertsent serve`: a trained model behind an HTTP API in the shape Hugging Face's inference servers use.

Endpoints (FastAPI, run by uvicorn):

- `POST /predict` `{"inputs": "text" | ["text", ...], "parameters": {"top_k": k, "neutral_band": x}}`: for one
  text `[{"label", "score"}, ...]`, for a list one such list per text (text-embeddings-inference's shape);
  calibrated probabilities, most probable first.
- `POST /`: the same, always a list per text (`[[...]]` for one text): the Inference API's shape, which
  `huggingface_hub.InferenceClient(model="http://HOST:PORT").text_classification(text)` posts and reads.
- `POST /explain` `{"inputs": "text" | [...], "parameters": {"target": label, "n_steps": n}}`: word attributions.
- `GET /health` (503 until the model is loaded, which happens in the background at startup), `GET /info`,
  `GET /metrics` (Prometheus), `GET /docs` and `/openapi.json`, and `GET /`: a page to try the model.

Concurrent requests are scored together: one worker thread takes every request waiting, waits a few
milliseconds more only while others are on their way, up to a token budget, runs the model once and hands
each request its own rows. Bad input never gets a 500: 413 (too many texts, too long a text), 422 (malformed
JSON, nested too deep, wrong types, an empty list, an unknown key, text that is not valid Unicode), 415 (a body
that is not application/json), 429 (too many requests in flight, or connections from one address), 408 (headers
or body too slow), 401 (wrong API key), each as `{"error": ..., "error_type": ...}`. A client that hangs up is
counted as 499. Everything is checked before the batcher sees it, and what still fails there fails its request
alone; `/health` (readiness) and `/live` (liveness) turn 503 when predictions are not being answered.
"""

import asyncio
import copy
import errno
import json
import os
import queue
import secrets
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertsent.errors import BertsentError

if TYPE_CHECKING:  # imported where used: the command line reads Limits and API_KEY_ENV without them
    import numpy as np

    from bertsent.prediction.predictor import SentimentModel

API_KEY_ENV = "BERTSENT_API_KEY"
INSTALL = "pip install 'bertsent[serve]'"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
PAGE_FILE = Path(__file__).resolve().parent / "web" / "index.html"
OPEN_PATHS = ("/health", "/live", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")  # and GET /
PREDICT_PATHS = ("/predict", "/")
ROUTES = ("/", "/predict", "/explain", "/health", "/live", "/info", "/metrics", "/docs", "/openapi.json")
PREDICT_KEYS = ("top_k", "neutral_band", "function_to_apply")
MAX_DEPTH = 8  # JSON nesting a request may have (it needs 3): deeper is refused
TOO_DEEP = f"JSON nested more than {MAX_DEPTH} levels deep; a request needs 3"
EXPLAIN_KEYS = ("target", "n_steps")
# Seconds an idle kept-alive connection stays open. Longer than clients keep theirs (httpx: 5 s, load balancers
# often 60 s): with uvicorn's 5 s, a client reusing a connection just as the server closes it loses its request
# (bench/serve_load.py lost 1 of 537 under load; 4 of 764 requests sent after 4.95-5.05 s idle, none at 75 s).
KEEP_ALIVE_S = 75
DRAIN_S = 20  # on SIGTERM, the most seconds spent finishing the requests in flight before exiting


@dataclass
class Limits:
    """What one server accepts. A request over `max_batch_tokens` on its own is scored alone."""

    max_texts: int = 64  # texts per request
    max_chars: int = 20_000  # characters per text
    max_inflight: int = 256  # requests being answered at once (more: 429)
    max_batch_tokens: int = 16_384  # tokens scored together, at most (each text counted to max_length)
    max_wait_ms: float = 5.0  # how long a batch waits for requests still on their way
    max_explain_texts: int = 4  # texts per /explain request
    max_explain_steps: int = 256  # n_steps of /explain, at most
    # Slow or half-sent requests (slowloris): the headers must arrive within header_timeout_s of the connection
    # (or of the previous answer), the whole body within body_timeout_s of the headers; else 408 and closed.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_client_connections: int = 128  # open connections from one address (more: 429, closed); 0: no cap

    def check(self) -> None:
        for name, value in asdict(self).items():
            least = {"max_wait_ms": 0, "max_client_connections": 0}.get(name, 0.01 if name.endswith("_s") else 1)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise BertsentError(f"{flag} {value}: must be a number of at least {least}.")


class RequestError(Exception):
    """A request the server refuses: its status, its kind (`error_type`) and a message for the client."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


# -- the model's state and the batching worker ---------------------------------------------------


class _Job:
    __slots__ = ("future", "loop", "texts")

    def __init__(self, texts: list[str], future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.texts, self.future, self.loop = texts, future, loop


class Batcher:
    """One worker thread that scores waiting requests together and hands each its own rows.

    It takes the first request waiting, then every other one already queued; while `pending()` says more are
    on their way (arrived, not yet queued) it waits for them, at most `max_wait_ms`. A batch holds at most
    `max_batch_tokens` tokens (a request that would pass it starts the next batch)."""

    def __init__(self, model, limits: Limits, pending, observe=None, stall_s: float = 120.0):
        self.model = model
        self.stall_s = stall_s  # a model call running longer: /health says predictions are stuck
        self.busy_since: float | None = None  # when the batch now being collected and scored was taken
        self.stopped = False
        self.limits = limits
        self.pending = pending
        self.observe = observe or (lambda texts, requests: None)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="bertsent-batcher", daemon=True)
        self.thread.start()

    def submit(self, texts: list[str]) -> asyncio.Future:
        if self.stopped:
            raise RequestError(503, "unavailable", "the batching worker stopped; the server must be restarted")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put(_Job(texts, future, loop))
        return future

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def cost(self, texts: list[str]) -> int:
        """Tokens the model will run for these texts: each text to max_length, a long one's every window."""
        from bertsent.modeling.tokens import model_inputs, tokenize

        model = self.model
        ids, _ = model_inputs(tokenize(model.tokenizer, texts), model.truncation, model.max_length, model.stride)
        return sum(map(len, ids))

    def _run(self) -> None:
        held = None
        try:
            while True:
                first = held if held is not None else self.queue.get()
                if first is None:
                    return
                self.busy_since = time.monotonic()  # counting its tokens (the tokenizer) as well as the model
                try:
                    batch, held, stop = self._collect(first)
                    self._score(batch)
                except Exception as exc:  # noqa: BLE001 - a bug of ours: fail what it held, keep serving
                    _fail([first], exc)
                    held, stop = None, False
                finally:
                    self.busy_since = None
                if stop:
                    return
        finally:  # stopped, or killed by something no request caused: nobody waits forever
            self.stopped = True
            while True:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    _fail([job], RequestError(503, "unavailable", "the batching worker stopped"))

    def _collect(self, first: _Job):
        """The batch starting with `first`, the job that did not fit (or None), and whether to stop after. A
        request whose tokens cannot be counted is failed here, alone."""
        batch, tokens = [first], self._cost_or_fail(first)
        if tokens is None:
            batch, tokens = [], 0
        deadline = time.monotonic() + self.limits.max_wait_ms / 1000
        while tokens < self.limits.max_batch_tokens:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self.pending() <= 0:
                    break
                try:
                    job = self.queue.get(timeout=min(left, 0.001))
                except queue.Empty:
                    continue
            if job is None:  # stop, once this batch is answered
                return batch, None, True
            cost = self._cost_or_fail(job)
            if cost is None:
                continue
            if batch and tokens + cost > self.limits.max_batch_tokens:
                return batch, job, False
            batch.append(job)
            tokens += cost
        return batch, None, False

    def _cost_or_fail(self, job: _Job) -> int | None:
        try:
            return self.cost(job.texts)
        except Exception as exc:  # noqa: BLE001 - this request's texts alone: it fails, the others go on
            _fail([job], exc)
            return None

    def _score(self, batch: list[_Job]) -> None:
        if not batch:
            return
        texts = [t for job in batch for t in job.texts]
        try:
            probs = self.model.predict_proba(texts)
        except Exception as exc:  # noqa: BLE001 - find the request that caused it: each alone, once
            if len(batch) == 1:
                _fail(batch, exc)
            else:
                for job in batch:
                    self._score([job])
            return
        self.observe(len(texts), len(batch))
        start = 0
        for job in batch:
            rows = probs[start : start + len(job.texts)]
            start += len(job.texts)
            job.loop.call_soon_threadsafe(_settle, job.future, rows, None)

    def health(self) -> str | None:
        """The watchdog's view: None while predictions are being answered, else why not."""
        if self.stopped or not self.thread.is_alive():
            return "the batching worker stopped"
        busy = self.busy_since
        if busy is not None and time.monotonic() - busy > self.stall_s:
            return f"one model call has run for {time.monotonic() - busy:.0f} s (more than {self.stall_s:g} s)"
        return None


def _fail(jobs: list[_Job], error: Exception) -> None:
    for job in jobs:
        job.loop.call_soon_threadsafe(_settle, job.future, None, error)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Service:
    """What the app serves: the model (loaded in the background), its batcher, explainer, limits, metrics."""

    def __init__(self, source, limits: Limits, api_key: str | None, load_options: dict | None = None, on_failure=None):
        self.source = source
        self.on_failure = on_failure  # called (from the loading thread) when the model cannot be loaded
        self.limits = limits
        self.api_key = api_key or None
        self.load_options = load_options or {}
        self.model: SentimentModel | None = None
        self.batcher: Batcher | None = None
        self.state = "loading"
        self.failure: str | None = None
        self.inflight = 0  # requests whose body has arrived, not yet answered
        self.announced = 0  # predict requests whose body has arrived, not yet queued or refused
        self.metrics = _Metrics()
        # (torch model, tokenizer) of its own, made on the first /explain
        self._explainer: tuple[Any, Any] | None = None
        self._explain_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertsent-explain")
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load, name="bertsent-loader", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = self._open()
            self.batcher = Batcher(model, self.limits, lambda: self.announced, self.metrics.batch)
            self.model = model
            self.state = "ready"
            self.metrics.loaded.set(1)
            _log(f"model loaded in {time.perf_counter() - started:.1f} s ({model.backend_name}): ready")
        except Exception as exc:  # noqa: BLE001 - /health says why; `bertsent serve` then exits (on_failure)
            self.failure = str(exc) if isinstance(exc, BertsentError) else f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            if self.on_failure is not None:
                self.on_failure()
            else:
                _log(f"error: the model could not be loaded: {self.failure}")

    def _open(self):
        from bertsent.prediction.predictor import SentimentModel

        if isinstance(self.source, SentimentModel):
            return self.source
        if callable(self.source):
            return self.source()
        options = dict(self.load_options)
        if options.get("batch_size") is None:
            options["batch_size"] = serving_batch_size(
                self.source, options.get("backend", "auto"), options.get("device")
            )
        return SentimentModel.load(self.source, **options)

    def stop(self) -> None:
        """Stop the batcher once it has answered what it holds. A model still loading is not waited for: the
        loading thread is a daemon and ends with the process (SIGTERM while loading exits at once)."""
        if self.batcher is not None:
            self.batcher.stop()
        self._explain_pool.shutdown(wait=False, cancel_futures=True)

    def ready(self):
        """The model, or the 503 that says it is not there yet (or that predictions are not being answered)."""
        if self.state == "ready":
            trouble = self.batcher.health()
            if trouble is not None:
                raise RequestError(503, "unavailable", f"predictions are not being answered: {trouble}")
            return self.model
        if self.state == "failed":
            raise RequestError(503, "not_ready", f"the model could not be loaded: {self.failure}")
        raise RequestError(503, "not_ready", "the model is loading; try again shortly (GET /health says when)")

    @contextmanager
    def in_flight(self):
        """A request whose body has arrived, counted until it is answered; over `max_inflight`, 429. Requests
        still sending their body are not counted: slow clients cannot fill the server (the body timeout ends
        them)."""
        if self.inflight >= self.limits.max_inflight:
            raise RequestError(
                429, "overloaded", f"{self.inflight} requests in flight, the most this server takes; retry shortly"
            )
        self.inflight += 1
        self.metrics.inflight.inc()
        try:
            yield
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()

    def explain(self, texts: list[str], target: str | None, n_steps: int | None) -> list:
        """Word attributions, on a PyTorch model and tokenizer of the explainer's own: Captum hooks the
        embedding layer while it runs, which must not touch the predictions made meanwhile."""
        from bertsent.evaluation.explain import explain

        model = self.model
        assert model is not None  # asked for once ready
        if self._explainer is None:
            network = model.model  # with an ONNX backend, loaded now, for this alone
            if network is getattr(model.backend, "model", None):  # the torch backend's own: copy it
                network = copy.deepcopy(network)
            self._explainer = (network, copy.deepcopy(model.tokenizer))
        network, tokenizer = self._explainer
        return explain(
            network,
            tokenizer,
            texts,
            target,
            n_steps=n_steps,
            max_length=model.max_length,
            temperature=model.temperature,
        )

    def info(self) -> dict:
        from bertsent.runtime import library_versions

        model = self.model
        folder = model.folder if model is not None else (self.source if isinstance(self.source, (str, Path)) else None)
        out: dict[str, Any] = {"model": str(folder) if folder is not None else None, "state": self.state}
        if model is not None:
            out |= {
                "base_model": model.metadata.get("base_model"),
                "labels": list(model.classes_),
                "max_length": model.max_length,
                "long": model.long,
                "stride": model.stride if model.long == "windows" else None,
                "temperature": model.temperature,
                "backend": model.backend_name,
                "batch_size": model.batch_size,
                "neutral_band": model.neutral_band,
            }
        out["limits"] = asdict(self.limits)
        out["auth"] = self.api_key is not None
        out["versions"] = library_versions() | _server_versions()
        return out


def serving_batch_size(folder, backend: str, device: str | None) -> int:
    """Texts per model call when a batch of requests is scored. On a GPU, 64. On the CPU, where a forward
    pass costs about the same per text at any batch size, the batch only adds padding (reviews of 100-300
    tokens batched 16 at a time pad to the longest): 8 texts a call for PyTorch, whose threads synchronize
    less often in larger calls, and 1 for ONNX Runtime, whose int8 MiniLM takes longer per text in larger
    batches (21 ms a 200-token review alone, 37 ms each in batches of 16, one thread). Requests are still
    collected together, into one worker, lengths sorted."""
    from bertsent.prediction.backends import resolve_backend
    from bertsent.runtime import pick_device

    device_type = pick_device(device).type
    if resolve_backend(backend, Path(folder), device_type) != "torch":
        return 1
    return 8 if device_type == "cpu" else 64


def _server_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("fastapi", "uvicorn", "onnxruntime", "captum"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


class _Metrics:
    """Prometheus metrics of one app, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bertsent_requests", "HTTP requests answered", ["path", "method", "status"], registry=self.registry
        )
        self.errors = Counter(
            "bertsent_errors", "requests refused or failed, by kind", ["kind"], registry=self.registry
        )
        self.latency = Histogram(
            "bertsent_request_seconds",
            "time to answer a request",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "bertsent_batch_texts",
            "texts scored in one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "bertsent_batch_requests",
            "requests answered by one model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.texts = Counter("bertsent_texts", "texts scored", registry=self.registry)
        self.inflight = Gauge("bertsent_inflight_requests", "requests being answered", registry=self.registry)
        self.loaded = Gauge("bertsent_model_loaded", "1 once the model is loaded", registry=self.registry)

    def batch(self, texts: int, requests: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.texts.inc(texts)


def _log(message: str) -> None:
    print(f"bertsent serve: {message}", file=sys.stderr, flush=True)


# -- requests and answers ------------------------------------------------------------------------


def parse_body(body: bytes, keys: tuple[str, ...], max_texts: int, max_chars: int):
    """`{"inputs": str | [str], "parameters": {...}}` checked: (texts, one text given?, parameters)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(422, "validation", f"malformed JSON: {exc}") from None
    except RecursionError:  # nested deeper than Python parses
        raise RequestError(422, "validation", TOO_DEEP) from None
    if _depth(payload) > MAX_DEPTH:
        raise RequestError(422, "validation", TOO_DEEP)
    if not isinstance(payload, dict):
        raise RequestError(422, "validation", 'the body must be a JSON object: {"inputs": "text" or ["text", ...]}')
    unknown = sorted(set(payload) - {"inputs", "parameters"})
    if unknown:
        raise RequestError(422, "validation", f"unknown key {unknown[0]!r}: the body takes inputs and parameters")
    if "inputs" not in payload:
        raise RequestError(422, "validation", 'missing "inputs": give a text or a list of texts')
    inputs = payload["inputs"]
    single = isinstance(inputs, str)
    texts = [inputs] if single else inputs
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise RequestError(422, "validation", '"inputs" must be a string or a list of strings')
    if not texts:
        raise RequestError(422, "validation", '"inputs" is an empty list: give at least one text')
    if len(texts) > max_texts:
        raise RequestError(
            413, "too_large", f"{len(texts)} texts in one request; this server takes at most {max_texts}"
        )
    _check_encodable(texts)
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > max_chars:
        raise RequestError(
            413,
            "too_large",
            f"text {longest} has {len(texts[longest])} characters; this server takes at most {max_chars} per text",
        )
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(422, "validation", '"parameters" must be an object')
    unknown = sorted(set(parameters) - set(keys))
    if unknown:
        raise RequestError(422, "validation", f"unknown parameter {unknown[0]!r}; parameters are {', '.join(keys)}")
    return texts, single, {k: v for k, v in parameters.items() if v is not None}


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


def _check_encodable(texts: list[str]) -> None:
    """Every text as UTF-8, as the tokenizer needs it: JSON can carry a lone surrogate (\\ud800), which no
    tokenizer accepts."""
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


def predict_parameters(parameters: dict, model) -> tuple[int | None, float | None]:
    """top_k (None: every class) and the neutral band (default: the server's)."""
    top_k = parameters.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise RequestError(422, "validation", f"top_k {top_k!r}: must be a whole number of at least 1")
    band = parameters.get("neutral_band", model.neutral_band)
    if band is not None and (isinstance(band, bool) or not isinstance(band, (int, float)) or not 0 <= band < 1):
        raise RequestError(422, "validation", f"neutral_band {band!r}: must be a number in [0, 1), e.g. 0.2")
    transform = parameters.get("function_to_apply")
    if transform is not None and transform != "softmax":
        raise RequestError(
            422, "validation", f"function_to_apply {transform!r}: this server answers calibrated softmax scores only"
        )
    return top_k, band


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


def explain_parameters(parameters: dict, model, limits: Limits) -> tuple[str | None, int | None]:
    target = parameters.get("target")
    if target is not None and target not in model.classes_:
        raise RequestError(422, "validation", f"target {target!r}: the model's labels are {', '.join(model.classes_)}")
    steps = parameters.get("n_steps")  # None: by the text's length (bertsent.evaluation.explain.auto_steps)
    if steps is None:
        return target, None
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= limits.max_explain_steps:
        raise RequestError(
            422, "validation", f"n_steps {steps!r}: must be a whole number from 1 to {limits.max_explain_steps}"
        )
    return target, steps


def _request_schema(example: dict, parameters: dict) -> dict:
    """The request body as the OpenAPI page shows it (the handlers read and check the body themselves)."""
    text = {"type": "string"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "additionalProperties": False,
                        "properties": {
                            "inputs": {"oneOf": [text, {"type": "array", "items": text, "minItems": 1}]},
                            "parameters": {"type": "object", "additionalProperties": False, "properties": parameters},
                        },
                    },
                    "example": example,
                }
            },
        }
    }


PREDICT_SCHEMA = _request_schema(
    {"inputs": "A warm, funny film; I loved it.", "parameters": {"top_k": 2}},
    {
        "top_k": {"type": "integer", "minimum": 1, "description": "the k most probable labels (default: all)"},
        "neutral_band": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "description": "binary models"},
        "function_to_apply": {"type": "string", "enum": ["softmax"]},
    },
)
EXPLAIN_SCHEMA = _request_schema(
    {"inputs": "A warm, funny film; I loved it."},
    {
        "target": {"type": "string", "description": "the label to explain (default: the predicted one)"},
        "n_steps": {"type": "integer", "minimum": 1, "description": "integration steps (default: by length)"},
    },
)


# -- the app -------------------------------------------------------------------------------------


def require_server():
    """FastAPI's module, or a BertsentError that says how to install the server's packages."""
    try:
        import fastapi
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise BertsentError(f"the server's packages are not installed: {INSTALL}") from None
    return fastapi


def _error_response(service: Service, error: RequestError):
    from fastapi.responses import JSONResponse

    service.metrics.errors.labels(error.kind).inc()
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse({"error": error.message, "error_type": error.kind}, status_code=error.status, headers=headers)


def _json(payload, status: int = 200):
    from starlette.responses import Response

    return Response(json.dumps(payload, ensure_ascii=False).encode("utf-8"), status, media_type="application/json")


class _Gate:
    """ASGI middleware before everything: the API key, the body's deadline, and the request metrics."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        self.expected = f"Bearer {service.api_key}".encode() if service.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, path, method = self.service, scope["path"], scope["method"]
        started = time.perf_counter()
        body = _BodyDeadline(receive, scope["headers"], service.limits.body_timeout_s)
        status = 500  # what is counted if the app sends nothing

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 408:  # the body is late: do not wait for the rest (an early 413 or 401 lets the client
                    # finish sending, read and dropped, so that it reads the answer; the header timeout bounds that)
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            refusal = self._refusal(scope, path, method)
            if refusal is not None:
                return await _error_response(service, refusal)(scope, receive, sending)
            await self.app(scope, body.receive, sending)
        finally:
            label = path if path in ROUTES else "other"
            service.metrics.requests.labels(label, method, str(status)).inc()
            service.metrics.latency.labels(label).observe(time.perf_counter() - started)

    def _refusal(self, scope, path: str, method: str) -> RequestError | None:
        open_path = path in OPEN_PATHS or (path == "/" and method in ("GET", "HEAD"))
        if self.expected is not None and not open_path:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                what = "a wrong API key" if given else "no API key"
                return RequestError(401, "unauthorized", f"{what}: send the header Authorization: Bearer KEY")
        return None


class _BodyDeadline:
    """The ASGI `receive` of one request, bounded: the whole body within `seconds` of the headers, else 408
    (a client sending a byte every few seconds, or fewer bytes than its Content-Length, holds nothing for long)."""

    def __init__(self, receive, headers, seconds: float):
        self._receive = receive
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        found = dict(headers)
        self.done = found.get(b"content-length", b"0") in (b"0", b"") and b"transfer-encoding" not in found

    async def receive(self):
        if self.done:  # the body is in: later calls only wait for a disconnect
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            raise RequestError(
                408, "timeout", f"the request body did not arrive within {self.seconds:g} s; send it at once"
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


def guarded_protocol(service: Service):
    """uvicorn's h11 protocol with the defences it lacks against slow clients: the request headers must arrive
    within `header_timeout_s` of the connection (or of the previous answer on it), else 408 and the connection
    is closed; one address holds at most `max_client_connections` open connections (more: 429, closed at
    once). Behind a reverse proxy every client has the proxy's address: raise the cap, or 0 for none."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    limits = service.limits
    open_by_address: Counter = Counter()

    class GuardedProtocol(H11Protocol):
        header_timer = None
        address = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self.address = self.client[0] if self.client else None
            open_by_address[self.address] += 1
            most = limits.max_client_connections
            if most and open_by_address[self.address] > most:
                message = f"more than {most} open connections from {self.address}; close some and retry"
                self._refuse(429, "overloaded", message)
                return
            self._arm()

        def connection_lost(self, exc):
            open_by_address[self.address] -= 1
            if open_by_address[self.address] <= 0:
                del open_by_address[self.address]
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is None or self.cycle.response_complete:  # still waiting for a request's headers
                if self.header_timer is None:
                    self._arm()
            else:
                self._disarm()

        def _arm(self):
            self.header_timer = self.loop.call_later(limits.header_timeout_s, self._headers_late)

        def _disarm(self):
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_late(self):
            self.header_timer = None
            if self.cycle is None or self.cycle.response_complete:
                self._refuse(408, "timeout", f"no complete request headers within {limits.header_timeout_s:g} s")

        def _refuse(self, status: int, kind: str, message: str):
            if self.transport.is_closing():
                return
            service.metrics.errors.labels(kind).inc()
            service.metrics.requests.labels("other", "", str(status)).inc()
            self.transport.write(_raw_response(status, kind, message))
            self.transport.close()

    return GuardedProtocol


def _raw_response(status: int, kind: str, message: str) -> bytes:
    """A whole HTTP/1.1 error answer, for a connection refused before any request was read."""
    from http import HTTPStatus

    body = json.dumps({"error": message, "error_type": kind}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def uvicorn_config(app, **settings):
    """uvicorn's settings for the app from `create_app`: its guarded protocol, connections kept alive longer than
    clients keep theirs, and a bounded drain on shutdown. `settings` are uvicorn.Config's (host, port, ...)."""
    import uvicorn

    settings = {
        "http": guarded_protocol(app.state.service),
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": DRAIN_S,
        **settings,
    }
    return uvicorn.Config(app, **settings)


def create_app(
    model,
    *,
    api_key: str | None = None,
    load_options: dict | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    on_failure=None,
    **limits,
):
    """The FastAPI app serving `model`: a model folder (loaded in the background once the app starts, with
    `load_options` as `bertsent.load` takes them), a loaded SentimentModel, or a function that returns one.
    `limits` are `Limits`' fields; `cors_origins` the web pages (origins) allowed to call it from a browser
    (none by default); `on_failure()` is called if the model cannot be loaded. Serve it with
    `uvicorn.Server(uvicorn_config(app, ...))` for the defences against slow clients."""
    fastapi = require_server()
    from contextlib import asynccontextmanager

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse
    from starlette.exceptions import HTTPException

    checked = Limits(**limits)
    checked.check()
    service = Service(model, checked, api_key, load_options, on_failure)

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = fastapi.FastAPI(
        title="bertsent",
        description="Sentiment of texts, in the shape of Hugging Face's text-classification servers.",
        version=_package_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Gate, service=service)
    if cors_origins:  # outside the gate: a browser's preflight carries no API key
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.exception_handler(RequestError)
    async def refused(request, exc: RequestError):
        return _error_response(service, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}" if where else first.get("msg", "invalid request")
        return _error_response(service, RequestError(422, "validation", message))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return _error_response(service, RequestError(exc.status_code, kind, str(exc.detail)))

    @app.exception_handler(Exception)
    async def internal(request, exc: Exception):
        return _error_response(service, RequestError(500, "internal", f"internal error: {type(exc).__name__}: {exc}"))

    _routes(app, service, HTMLResponse)
    return app


def _routes(app, service: Service, html_response) -> None:
    # No `from __future__ import annotations` in this module: FastAPI reads these handlers' annotations, and
    # Request is imported here, not at the top (the server's packages are an extra).
    from fastapi import Request
    from starlette.responses import Response

    async def scores(request: Request) -> tuple[list, bool]:
        """The answers of a predict request, one list per text, and whether one text was given. Everything is
        checked before the batcher sees it; what still fails there fails this request alone."""
        model = service.ready()
        body = await read_body(request, service.limits)
        with service.in_flight():
            service.announced += 1  # the batcher waits for it while it is being checked
            try:
                texts, single, parameters = parse_body(
                    body, PREDICT_KEYS, service.limits.max_texts, service.limits.max_chars
                )
                top_k, band = predict_parameters(parameters, model)
                assert service.batcher is not None  # made before the model is ready
                future = service.batcher.submit(texts)
            finally:
                service.announced -= 1
            try:
                rows = await future
            except RequestError:
                raise
            except Exception as exc:  # noqa: BLE001 - the model failed on this request: a JSON 500, no traceback
                _log(f"error: a request failed in the model: {type(exc).__name__}: {exc}")
                raise RequestError(500, "internal", f"the model failed on this request: {type(exc).__name__}") from None
        return [answer(row, model.classes_, top_k, band) for row in rows], single

    @app.post("/predict", openapi_extra=PREDICT_SCHEMA, summary="Labels and calibrated scores of texts")
    async def predict(request: Request):
        answers, single = await scores(request)
        return _json(answers[0] if single else answers)

    @app.post("/", openapi_extra=PREDICT_SCHEMA, summary="As /predict, a list per text (Inference API shape)")
    async def predict_root(request: Request):
        answers, _ = await scores(request)
        return _json(answers)

    @app.post("/explain", openapi_extra=EXPLAIN_SCHEMA, summary="Word attributions (integrated gradients)")
    async def explain(request: Request):
        model = service.ready()
        body = await read_body(request, service.limits)
        with service.in_flight():
            texts, single, parameters = parse_body(
                body, EXPLAIN_KEYS, service.limits.max_explain_texts, service.limits.max_chars
            )
            target, steps = explain_parameters(parameters, model, service.limits)
            loop = asyncio.get_running_loop()
            try:
                found = await loop.run_in_executor(service._explain_pool, service.explain, texts, target, steps)
            except BertsentError as exc:  # Captum not installed
                raise RequestError(501, "unavailable", str(exc)) from None
        records = [x.as_dict() for x in found]
        return _json(records[0] if single else records)

    @app.get("/health", summary="200 once the model is loaded and predictions are being answered, else 503")
    async def health():
        service.ready()
        return _json({"status": "ok", "backend": service.model.backend_name})

    @app.get(
        "/live", summary="Liveness: 200 while loading or answering, 503 once the model failed or predictions stall"
    )
    async def live():
        if service.state == "failed" or (service.batcher is not None and service.batcher.health() is not None):
            service.ready()  # its 503, with the reason
        return _json({"status": service.state})

    @app.get("/info", summary="The model, its labels, limits and versions")
    async def info():
        return _json(service.info())

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page_html: list[str] = []

    @app.get("/", response_class=html_response, summary="A page to try the model")
    async def page():
        if not page_html:
            page_html.append(PAGE_FILE.read_text(encoding="utf-8"))
        return html_response(page_html[0])


async def read_body(request, limits: Limits) -> bytes:
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
    from starlette.requests import ClientDisconnect

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


def _package_version() -> str:
    from bertsent.environment import package_version

    return package_version()


# -- running it ----------------------------------------------------------------------------------


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host.startswith("127.")


def serve(
    model_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    access_log: bool = False,
    load_options: dict | None = None,
    cors_origins: tuple[str, ...] | list[str] = (),
    announce=None,
    **limits,
) -> None:
    """Run the server until SIGTERM or Ctrl-C (it then finishes the requests in flight, at most DRAIN_S seconds,
    and returns). The folder, settings and port are checked first (then `announce()` is called, if given); the
    model loads once the server listens. A model that cannot be loaded stops the server: BertsentError."""
    require_server()
    import uvicorn

    from bertsent.modeling.hub import check_model_folder

    folder = Path(model_dir).expanduser()
    check_model_folder(folder, need_classifier=True)
    options = load_options or {}
    serving_batch_size(folder, options.get("backend", "auto"), options.get("device"))  # a backend not exported
    if not 0 <= port < 65536:
        raise BertsentError(f"--port {port}: give a port from 0 to 65535.")
    server = None

    def failed():  # from the loading thread: uvicorn checks should_exit every 0.1 s
        server.should_exit = True

    app = create_app(
        folder, api_key=api_key, load_options=load_options, cors_origins=cors_origins, on_failure=failed, **limits
    )
    sock = listening_socket(host, port)  # before the model loads: a port in use is said at once
    with sock, stop_on_sigterm():
        server = uvicorn.Server(uvicorn_config(app, log_level=log_level, access_log=access_log))
        if announce is not None:
            announce()
        server.run(sockets=[sock])  # on SIGTERM it drains, then raises the signal again: Stopped, caught
    service = app.state.service
    if service.state == "failed":
        raise BertsentError(f"the model could not be loaded: {service.failure}")


class Stopped(Exception):
    """SIGTERM: the server stops as on Ctrl-C, and the process exits 0."""


@contextmanager
def stop_on_sigterm():
    """SIGTERM raises Stopped while this lasts (uvicorn installs its own handler while it runs, drains, then raises
    the signal again: it lands here). Without it, SIGTERM before or after uvicorn's run kills the process."""
    import signal

    def stop(signum, frame):
        raise Stopped

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except Stopped:
        pass
    finally:
        signal.signal(signal.SIGTERM, before)


def listening_socket(host: str, port: int):
    """A socket bound to host:port, or a BertsentError saying why not (a port in use, an unknown host)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise BertsentError(f"--host {host}: {exc.strerror}.") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port at once
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise BertsentError(
                f"--port {port}: {host}:{port} is already in use; stop what uses it or pick another port."
            ) from None
        raise BertsentError(f"--host {host} --port {port}: cannot listen there: {exc.strerror}.") from None
    sock.set_inheritable(True)
    return sock
