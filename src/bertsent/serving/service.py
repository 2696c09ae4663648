"""The model service: the model (loaded in the background at start-up), its state (loading, ready, failed),
its batcher, the in-flight count, the explainer, `/info`."""

import copy
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertsent.errors import BertsentError
from bertsent.serving.batcher import Batcher
from bertsent.serving.limits import Limits
from bertsent.serving.metrics import Metrics
from bertsent.serving.responses import RequestError


class Service:
    """What the app serves: the model (loaded in the background), its batcher, explainer, limits, metrics.
    `model_dir` is a trained model folder, a loaded SentimentModel, or a function that returns one."""

    def __init__(
        self, model_dir, limits: Limits, api_key: str | None, load_options: dict | None = None, on_failure=None
    ):
        self.model_dir = model_dir
        self.on_failure = on_failure  # called (from the loading thread) when the model cannot be loaded
        self.limits = limits
        self.api_key = api_key or None
        self.load_options = load_options or {}
        self.model: Any = None  # the SentimentModel, once loaded
        self.batcher: Batcher | None = None
        self.state = "loading"
        self.failure: str | None = None
        self.inflight = 0  # requests whose body has arrived, not yet answered
        self.metrics = Metrics()
        self._explainer: tuple[Any, Any] | None = None  # (torch model, tokenizer) of its own, made on first use
        self._explain_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertsent-explain")
        self._loader: threading.Thread | None = None

    def start(self) -> None:
        self._loader = threading.Thread(target=self._load, name="bertsent-loader", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            model = self._open()
            self.batcher = Batcher(
                model,
                max_batch_tokens=self.limits.max_batch_tokens,
                max_wait_ms=self.limits.max_wait_ms,
                observe=self.metrics.batch,
            )
            self.model = model
            self.state = "ready"
            self.metrics.loaded.set(1)
            log(f"model loaded in {time.perf_counter() - started:.1f} s ({model.backend_name}): ready")
        except Exception as exc:  # noqa: BLE001 - /health says why; `bertsent serve` then exits (on_failure)
            self.failure = str(exc) if isinstance(exc, BertsentError) else f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            if self.on_failure is not None:
                self.on_failure()
            else:
                log(f"error: the model could not be loaded: {self.failure}")

    def _open(self):
        from bertsent.prediction.predictor import SentimentModel

        if isinstance(self.model_dir, SentimentModel):
            return self.model_dir
        if callable(self.model_dir):
            return self.model_dir()
        options = dict(self.load_options)
        options.setdefault("spinning", False)  # ONNX Runtime's threads leave the cores to the event loop
        if options.get("batch_size") is None:
            options["batch_size"] = serving_batch_size(
                self.model_dir, options.get("backend", "auto"), options.get("device")
            )
        return SentimentModel.load(self.model_dir, **options)

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

    async def predict(self, texts: list[str], arrival=None) -> list:
        """Each text's row of probabilities, scored together with other requests' by the batcher (`arrival`:
        this request's count in `Batcher.arrivals`, ended once queued). What fails in the model fails this
        request alone: a JSON 500, no traceback."""
        assert self.batcher is not None, "predict() before the model is ready"  # the route checked ready()
        future = self.batcher.submit(texts, arrival)
        try:
            return await future
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model failed on this request
            log(f"error: a request failed in the model: {type(exc).__name__}: {exc}")
            raise RequestError(500, "internal", f"the model failed on this request: {type(exc).__name__}") from None

    async def explain(self, texts: list[str], target: str | None, n_steps: int | None) -> list:
        """Word attributions, one request at a time in a thread of their own (Captum's backward passes take
        seconds; the event loop goes on meanwhile)."""
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._explain_pool, self._explain, texts, target, n_steps)
        except BertsentError as exc:  # Captum not installed
            raise RequestError(501, "unavailable", str(exc)) from None

    def _explain(self, texts: list[str], target: str | None, n_steps: int | None) -> list:
        """On a PyTorch model and tokenizer of the explainer's own: Captum hooks the embedding layer while it
        runs, which must not touch the predictions made meanwhile."""
        from bertsent.evaluation.explain import explain

        model = self.model
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
        given = self.model_dir if isinstance(self.model_dir, (str, Path)) else None
        folder = model.folder if model is not None else given
        out: dict[str, Any] = {"model": str(folder) if folder is not None else None, "state": self.state}
        if model is not None:
            out |= {
                "base_model": model.metadata.get("base_model"),
                "labels": list(model.classes_),
                "max_length": model.max_length,
                "truncation": model.truncation,
                "stride": model.stride if model.truncation == "windows" else None,
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
    from bertsent.runtime import device_type as find_device_type

    device_type = find_device_type(device)  # no torch where the answer is plainly the CPU (ONNX serving)
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


def log(message: str) -> None:
    print(f"bertsent serve: {message}", file=sys.stderr, flush=True)
