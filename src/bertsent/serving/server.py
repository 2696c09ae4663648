"""Running the server: `serve()` (what `bertsent serve` calls: checks, the listening socket, uvicorn, SIGTERM),
`uvicorn_config` (the guarded protocol, keep-alive, the drain on shutdown)."""

import errno
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from bertsent.errors import BertsentError
from bertsent.extras import require_extra
from bertsent.serving.app import create_app
from bertsent.serving.guard import guarded_protocol
from bertsent.serving.service import serving_batch_size

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# Seconds an idle kept-alive connection stays open. Longer than clients keep theirs (httpx: 5 s, load balancers
# often 60 s): with uvicorn's 5 s, a client reusing a connection just as the server closes it loses its request
# (bench/serve_load.py lost 1 of 537 under load; 4 of 764 requests sent after 4.95-5.05 s idle, none at 75 s).
KEEP_ALIVE_S = 75
DRAIN_S = 20  # on SIGTERM, the most seconds spent finishing the requests in flight before exiting


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
    require_extra("serve", "serve")
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
