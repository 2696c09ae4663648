"""`bertsent serve` against hostile clients (issue 19): inputs that reached the batcher and killed it, JSON nested
to blow the parser's stack, slow and half-sent requests, clients that hang up mid-body, browsers posting text/plain,
a model that cannot load, a port in use, and SIGTERM. Each test here failed on the server before these defences."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from test_serve import running, slowed, wait_ready

import bertsent
from bertsent.cli import main
from bertsent.serving.app import create_app

JSON = {"content-type": "application/json"}
HEADERS_OF_100 = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"


def raw_connection(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started, reply = time.monotonic(), b""
    sock.settimeout(timeout)
    while True:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {timeout} s: {reply[:200]!r}") from None
        if not chunk:
            return reply, time.monotonic() - started
        reply += chunk


def metric(url: str, prefix: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def guarded(trained):
    """A server with short timeouts and few connections per client, so that the defences show in moments."""
    app = create_app(trained, max_inflight=2, header_timeout_s=0.5, body_timeout_s=1.0, max_client_connections=12)
    with running(app) as url:
        wait_ready(url)
        yield url


# -- S07: what reaches the batcher ---------------------------------------------------------------


def test_a_lone_surrogate_is_refused_naming_the_text_and_the_server_goes_on(guarded):
    """Valid JSON, not encodable text: the tokenizer's TypeError killed the batching thread, and every later
    prediction hung while /health said 200."""
    body = b'{"inputs": ["a fine film", "bad \\ud800 film"]}'
    refused = httpx.post(f"{guarded}/predict", content=body, headers=JSON, timeout=10)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error_type"] == "validation" and "text 1" in refused.json()["error"]
    assert "surrogate" in refused.json()["error"]
    assert httpx.post(f"{guarded}/predict", json={"inputs": "a fine film"}, timeout=10).status_code == 200
    assert httpx.get(f"{guarded}/health").status_code == 200


def test_a_request_the_model_fails_on_fails_alone(trained):
    """Whatever escapes the checks and breaks the model fails that request (a JSON 500), not its batch-mates
    and not the worker."""
    model = slowed(bertsent.load(trained), 0.2)
    score = model.predict_proba

    def predict_proba(texts, progress=None):
        if any("boom" in t for t in texts):
            raise TypeError("the tokenizer choked")
        return score(texts)

    model.predict_proba = predict_proba
    with running(create_app(model)) as url:
        wait_ready(url)
        with ThreadPoolExecutor(6) as pool:
            asks = [pool.submit(httpx.post, f"{url}/predict", json={"inputs": t}, timeout=30) for t in ["boom"] * 2]
            asks += [
                pool.submit(httpx.post, f"{url}/predict", json={"inputs": f"film {i}"}, timeout=30) for i in range(4)
            ]
            answers = [a.result() for a in asks]
        assert [a.status_code for a in answers] == [500, 500, 200, 200, 200, 200]
        assert answers[0].json() == {"error": "the model failed on this request: TypeError", "error_type": "internal"}
        assert httpx.post(f"{url}/predict", json={"inputs": "a fine film"}, timeout=10).status_code == 200


def test_health_says_when_predictions_are_not_answered(trained):
    """The watchdog: a model call stuck past its limit, or a batching worker that stopped, turns /health 503, and
    predictions are refused at once instead of waiting forever."""
    app = create_app(slowed(bertsent.load(trained), 1.5))
    with running(app) as url:
        wait_ready(url)
        batcher = app.state.service.batcher
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, f"{url}/predict", json={"inputs": "a film"}, timeout=30)
            time.sleep(0.3)
            batcher.stall_s = 0.5
            time.sleep(0.5)
            stuck = httpx.get(f"{url}/health")
            assert stuck.status_code == 503 and "model call has run for" in stuck.json()["error"], stuck.text
            assert httpx.get(f"{url}/live").status_code == 503  # a liveness probe restarts it
            assert slow.result().status_code == 200
        batcher.stall_s = 120
        assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.get(f"{url}/live").json() == {"status": "ready"}
        batcher.stop()  # the worker is gone
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and "batching worker stopped" in health.json()["error"]
        late = httpx.post(f"{url}/predict", json={"inputs": "a film"}, timeout=10)
        assert late.status_code == 503, late.text


# -- S27: nesting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"inputs": "a", "parameters": {"top_k": ' + b"[" * 20 + b"1" + b"]" * 20 + b"}}"],
    ids=["100000-brackets", "20-deep-parameter"],
)
def test_deeply_nested_json_is_a_422(guarded, body):
    response = httpx.post(f"{guarded}/predict", content=body, headers=JSON, timeout=10)
    assert response.status_code == 422, response.text
    assert "nested more than 8 levels" in response.json()["error"]


# -- S26, S06b, S30: slow and half-sent requests --------------------------------------------------


def test_a_body_shorter_than_its_content_length_gets_408_and_is_closed(guarded):
    with raw_connection(guarded) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(b'{"inputs": "a fi')  # 17 bytes of 1000, then nothing
        reply, waited = read_until_closed(sock, timeout=10)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b'"error_type":"timeout"' in reply and waited < 5


def test_a_body_sent_a_byte_at_a_time_is_cut_off(guarded):
    """Each byte in time, the whole too slow: a per-read timeout would never fire."""
    with raw_connection(guarded) as sock:
        sock.sendall(HEADERS_OF_100)
        started = time.monotonic()
        try:
            for _ in range(100):
                sock.sendall(b" ")
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply, _ = read_until_closed(sock, timeout=10)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("sent", [b"", b"POST /predict HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half-headers"])
def test_headers_that_do_not_arrive_get_408_and_the_connection_closed(guarded, sent):
    with raw_connection(guarded) as sock:
        sock.sendall(sent)
        reply, waited = read_until_closed(sock, timeout=10)
    assert reply.startswith(b"HTTP/1.1 408") and waited < 5, reply


def test_half_sent_bodies_do_not_count_as_in_flight(guarded):
    """The in-flight limit (2 here) counts requests whose body has arrived: clients that send 1 byte of a
    100-byte body no longer make every normal request a 429."""
    socks = [raw_connection(guarded) for _ in range(5)]
    try:
        for sock in socks:
            sock.sendall(HEADERS_OF_100 + b"{")
        time.sleep(0.2)
        response = httpx.post(f"{guarded}/predict", json={"inputs": "a fine film"}, timeout=10)
        assert response.status_code == 200, response.text
    finally:
        for sock in socks:
            sock.close()


def test_one_address_holds_a_bounded_number_of_connections(guarded):
    time.sleep(1.2)  # other tests' connections gone
    socks = [raw_connection(guarded) for _ in range(12)]
    try:
        extra = raw_connection(guarded)
        reply, _ = read_until_closed(extra, timeout=10)
        extra.close()
        assert reply.startswith(b"HTTP/1.1 429") and b"more than 12 open connections" in reply, reply
    finally:
        for sock in socks:
            sock.close()
    time.sleep(0.2)
    assert httpx.post(f"{guarded}/predict", json={"inputs": "a fine film"}, timeout=10).status_code == 200


# -- S29: hanging up mid-body ---------------------------------------------------------------------


def test_a_client_hanging_up_mid_body_is_counted_as_such_without_a_traceback(guarded, caplog):
    before = metric(guarded, 'bertsent_requests_total{method="POST",path="/predict",status="500"}')
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            with raw_connection(guarded) as sock:
                sock.sendall(HEADERS_OF_100 + b"{")
                time.sleep(0.05)
        time.sleep(0.3)
    assert metric(guarded, 'bertsent_requests_total{method="POST",path="/predict",status="500"}') == before
    assert metric(guarded, 'bertsent_requests_total{method="POST",path="/predict",status="499"}') >= 3
    assert metric(guarded, 'bertsent_errors_total{kind="disconnected"}') >= 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


# -- 5: browsers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_only_json_bodies_are_read(guarded, content_type):
    """A web page can make a browser POST text/plain (or a form) to a local server without asking it first
    (no CORS preflight): such bodies are refused, unread."""
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{guarded}/predict", content=b'{"inputs": "a film"}', headers=headers, timeout=10)
    assert response.status_code == 415, response.text
    assert response.json()["error_type"] == "unsupported_media_type"
    assert "access-control-allow-origin" not in response.headers
    ok = httpx.post(
        f"{guarded}/predict",
        content=b'{"inputs": "a film"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200 and "access-control-allow-origin" not in ok.headers


def test_cors_only_for_the_origins_given(trained):
    with running(create_app(trained, cors_origins=["https://app.example"], api_key="k")) as url:
        wait_ready(url)
        ask = {"origin": "https://app.example", "access-control-request-method": "POST"}
        preflight = httpx.options(f"{url}/predict", headers={**ask, "access-control-request-headers": "authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.options(f"{url}/predict", headers={**ask, "origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        answer = httpx.post(
            f"{url}/predict",
            json={"inputs": "a"},
            headers={"origin": "https://app.example", "authorization": "Bearer k"},
        )
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"


# -- S31, S23b, SIGTERM: the command ---------------------------------------------------------------


def test_a_model_that_cannot_load_ends_serve_with_exit_2(trained, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    started = time.monotonic()
    assert main(["serve", str(broken), "--port", "0", "--log-level", "warning"]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[-1].startswith("bertsent serve: error: the model could not be loaded: ") and "damaged" in lines[-1]
    assert sum("error" in line for line in lines) == 1, err
    assert time.monotonic() - started < 60


def test_a_port_in_use_is_said_before_the_model_loads(trained, monkeypatch, capsys):
    from bertsent.prediction.predictor import SentimentModel

    loads = []
    monkeypatch.setattr(SentimentModel, "load", classmethod(lambda cls, *a, **k: loads.append(a)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(trained), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port} is already in use" in err, err
    assert loads == []


def _serve_in_main_thread(argv: list[str], then) -> tuple[int, float]:
    """`main(argv)` here (signals reach the main thread only) while `then(url)` runs beside it; exit code, seconds."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    helper = threading.Thread(target=then, args=(url,), daemon=True)
    helper.start()
    started = time.monotonic()
    code = main([*argv, "--port", str(port), "--log-level", "warning"])
    helper.join(timeout=30)
    return code, time.monotonic() - started


def _wait_listening(url: str, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the server did not listen")


def test_sigterm_while_the_model_loads_exits_0(trained, monkeypatch):
    from bertsent.prediction.predictor import SentimentModel

    never = threading.Event()
    monkeypatch.setattr(SentimentModel, "load", classmethod(lambda cls, *a, **k: never.wait(60)))
    seen = {}

    def then(url):
        seen["health"] = _wait_listening(url)
        seen["live"] = httpx.get(f"{url}/live").status_code  # alive while loading: no restart
        os.kill(os.getpid(), signal.SIGTERM)

    code, seconds = _serve_in_main_thread(["serve", str(trained)], then)
    never.set()
    assert seen["health"] == 503 and seen["live"] == 200 and code == 0 and seconds < 30


def test_sigterm_drains_the_requests_in_flight_and_exits_0(trained, monkeypatch):
    from bertsent.prediction.predictor import SentimentModel

    model = slowed(bertsent.load(trained), 1.0)
    monkeypatch.setattr(SentimentModel, "load", classmethod(lambda cls, *a, **k: model))
    seen = {}

    def then(url):
        while _wait_listening(url) != 200:
            time.sleep(0.05)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, f"{url}/predict", json={"inputs": "a fine film"}, timeout=30)
            time.sleep(0.3)  # in the model now
            os.kill(os.getpid(), signal.SIGTERM)
            seen["answer"] = answer.result().status_code

    code, seconds = _serve_in_main_thread(["serve", str(trained)], then)
    assert seen["answer"] == 200 and code == 0 and seconds < 40
