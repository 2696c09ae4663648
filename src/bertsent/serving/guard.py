"""The defences before a request reaches its route: `Gate` (ASGI middleware: the API key, the body's deadline,
the request metrics) and `guarded_protocol` (uvicorn's HTTP protocol with a header deadline and a cap on
connections per address). CORS, when asked for, is Starlette's middleware, outside the gate (see app.py)."""

import asyncio
import secrets
import time
from collections import Counter

from bertsent.serving.responses import RequestError, error_response, raw_error
from bertsent.serving.service import Service

OPEN_PATHS = ("/health", "/live", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")  # and GET /
ROUTES = ("/", "/predict", "/explain", "/health", "/live", "/info", "/metrics", "/docs", "/openapi.json")


class Gate:
    """ASGI middleware before everything: the API key, the body's deadline, and the request metrics.

    The key is checked here, not as a FastAPI dependency (`Depends(HTTPBearer)`): FastAPI reads and parses a
    request's body before it solves its dependencies, so a client without the key could make the server read
    megabytes per request; here it is refused from its headers alone."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service
        self.expected = f"Bearer {service.api_key}".encode() if service.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        service, path, method = self.service, scope["path"], scope["method"]
        started = time.perf_counter()
        body = BodyDeadline(receive, scope["headers"], service.limits.body_timeout_s)
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
                return await error_response(refusal, service.metrics)(scope, receive, sending)
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


class BodyDeadline:
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
            self.transport.write(raw_error(status, kind, message))
            self.transport.close()

    return GuardedProtocol
