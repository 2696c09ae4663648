"""The batching worker: one thread that scores concurrent requests together, its watchdog, and the count of
requests on their way to it (anchor: infinity's inference/batch_handler.py)."""

import asyncio
import queue
import threading
import time
from contextlib import contextmanager

from bertsent.serving.responses import RequestError


class Arrivals:
    """Requests on their way to the batcher: their body is in, they are being checked, not yet queued. The
    batcher waits for them (at most max_wait_ms) rather than score a batch they would have joined.

    The route counts a request from the moment its body is in (`expect()`, a context manager yielding the
    request's `Arrival`); the request stops counting once queued (`Batcher.submit(texts, arrival)`) or refused
    (the context ends); `pending` is what the worker reads."""

    def __init__(self):
        self.pending = 0

    @contextmanager
    def expect(self):
        arrival = Arrival(self)
        self.pending += 1
        try:
            yield arrival
        finally:
            arrival.done()


class Arrival:
    """One request counted by `Arrivals`, until `done()` (queued or refused; a second call does nothing)."""

    __slots__ = ("arrivals",)

    def __init__(self, arrivals: Arrivals):
        self.arrivals: Arrivals | None = arrivals

    def done(self) -> None:
        if self.arrivals is not None:
            self.arrivals.pending -= 1
            self.arrivals = None


class _Job:
    __slots__ = ("future", "loop", "texts")

    def __init__(self, texts: list[str], future: asyncio.Future, loop: asyncio.AbstractEventLoop):
        self.texts, self.future, self.loop = texts, future, loop


class Batcher:
    """One worker thread that scores waiting requests together and hands each its own rows.

    It takes the first request waiting, then every other one already queued; while `arrivals.pending` says more
    are on their way it waits for them, at most `max_wait_ms`. A batch holds at most `max_batch_tokens` tokens
    (a request that would pass it starts the next batch). `observe(texts, requests)` is told each model call."""

    def __init__(self, model, *, max_batch_tokens: int, max_wait_ms: float, observe=None, stall_s: float = 120.0):
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_ms = max_wait_ms
        self.stall_s = stall_s  # a model call running longer: /health says predictions are stuck
        self.busy_since: float | None = None  # when the batch now being collected and scored was taken
        self.stopped = False
        self.arrivals = Arrivals()
        self.observe = observe or (lambda texts, requests: None)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="bertsent-batcher", daemon=True)
        self.thread.start()

    def submit(self, texts: list[str], arrival: Arrival | None = None) -> asyncio.Future:
        """Queue these texts; the future gets their rows of probabilities. `arrival` stops counting once queued."""
        try:
            if self.stopped:
                raise RequestError(503, "unavailable", "the batching worker stopped; the server must be restarted")
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self.queue.put(_Job(texts, future, loop))
            return future
        finally:
            if arrival is not None:
                arrival.done()

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
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while tokens < self.max_batch_tokens:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self.arrivals.pending <= 0:
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
            if batch and tokens + cost > self.max_batch_tokens:
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
