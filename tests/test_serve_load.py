"""The server under load, short forms of bench/serve_load.py: concurrent clients mixing good requests with
malformed JSON, wrong shapes, oversized bodies and too many or too long texts get no 5xx, lose no answer, cross
none, and the server's memory stays flat. The fast test serves in this process; the slow one runs the
benchmark's command line (`bertsent serve` in a process of its own)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import bertsent
from bertsent.serving.app import create_app
from bertsent.serving.server import uvicorn_config

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import serve_load  # noqa: E402 - the benchmark's own functions, from bench/

LIMITS = {"max_texts": 8, "max_chars": 400}


def serve_in_thread(app):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    return server, thread, sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def spread(model, texts) -> None:
    """The tiny model is sure of everything: a temperature that spreads its scores, so a crossed answer shows."""
    logits = model.decision_function(texts)
    model.temperature = float((logits[:, 1] - logits[:, 0]).std())


def load_result(trained, *, app_limits=None, **load):
    """run_load against the tiny model served in this process."""
    model = bertsent.load(trained)
    spread(model, serve_load.make_texts(64, 0, LIMITS["max_chars"]))
    server, thread, sock, url = serve_in_thread(create_app(model, **LIMITS, **(app_limits or {})))
    try:
        deadline = time.time() + 30
        while time.time() < deadline and httpx.get(f"{url}/health").status_code != 200:
            time.sleep(0.02)
        return serve_load.run_load(url, os.getpid(), texts=64, log=lambda _: None, **LIMITS, **load)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_sixteen_clients_mixing_good_and_bad_requests(trained):
    """A fixed number of requests, each kind at least once, not a fixed time: a busy machine sends them all."""
    result = load_result(trained, clients=16, count=140)
    summary = serve_load.summary_line(result) + f"\n{result['examples']}"
    assert result["passed"], summary
    assert set(result["sent"]) == set(serve_load.KINDS), summary  # every kind of request was sent
    assert result["requests"] == 140 and result["sent"]["good"] > 40 and result["good_texts"] > 80, summary
    assert result["server_errors"] == result["lost"] == result["crossed"] == result["wrong_status"] == 0
    assert result["distinguishable"] > 0.8, summary  # a crossed answer would have shown
    assert result["memory_mb"]["growth"]["VmRSS"] <= 1.10


def test_clients_beside_hostile_connections_and_malformed_requests(trained):
    """The benchmark's hostile run, short: slow and half-sent connections are cut off (408) by timeouts made short
    here, malformed requests get their 4xx, and the normal clients get every answer, uncrossed."""
    timeouts = {"header_timeout_s": 0.5, "body_timeout_s": 1.0}
    result = load_result(trained, app_limits=timeouts, clients=16, count=140, attackers=40)
    summary = serve_load.summary_line(result) + f"\n{result['examples']}"
    assert result["passed"], summary
    assert result["requests"] == 140 and result["attack_wrong"] == 0, summary
    answered = {key.split()[0] for key in result["attacks"]}
    assert set(serve_load.SLOW) | {"surrogate", "nested", "plain_text", "hangup"} <= answered, summary
    assert result["checks"]["no 5xx counted by the server"], summary


def test_a_chunked_body_over_the_limit_is_refused_while_it_is_read(trained):
    """Without a Content-Length the size is known only while reading: the server refuses the body once it passes
    the limit, instead of holding all of it in memory first (as it did: then "text 0 has 67108864 characters")."""
    server, thread, sock, url = serve_in_thread(create_app(bertsent.load(trained), max_texts=2, max_chars=100))

    def pieces():  # 64 MB
        yield b'{"inputs": ["'
        for _ in range(1024):
            yield b"x" * 65_536
        yield b'"]}'

    try:
        deadline = time.time() + 30
        while time.time() < deadline and httpx.get(f"{url}/health").status_code != 200:
            time.sleep(0.02)
        response = httpx.post(f"{url}/predict", content=pieces(), headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert response.json()["error"].startswith("a body of more than 67")  # 2 x (100 x 12 + 16) + 65,536 bytes
        healthy = httpx.post(f"{url}/predict", json={"inputs": "a wonderful film"})  # and it goes on answering
        assert healthy.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_kept_alive_connections_outlast_the_clients_own(trained, monkeypatch):
    """uvicorn closes an idle connection after 5 s, httpx reuses one for 5 s: a request sent just then was lost
    (4 of 764 sent after 4.95-5.05 s idle). `bertsent serve` keeps them longer than clients do."""
    import uvicorn

    from bertsent.serving.server import serve

    given = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: given.update(config=server.config))
    serve(trained, port=0)
    assert given["config"].timeout_keep_alive >= 60 > httpx.Limits().keepalive_expiry


def test_a_crossed_answer_is_caught():
    first, second = "a wonderful film", "a dull film"
    expected = {first: {"positive": 0.9, "negative": 0.1}, second: {"positive": 0.3, "negative": 0.7}}
    request = serve_load.Request("good", "/predict", b"", [first, second])

    def rows(*texts):
        order = lambda s: sorted(s.items(), key=lambda kv: -kv[1])  # noqa: E731
        return [[{"label": k, "score": v} for k, v in order(expected[t])] for t in texts]

    tally = serve_load.Tally()
    serve_load.check_answer(request, rows(first, second), expected, 1e-6, tally)
    assert not tally.crossed and tally.good_texts == 2
    serve_load.check_answer(request, rows(second, first), expected, 1e-6, tally)  # each given the other's
    serve_load.check_answer(request, rows(first), expected, 1e-6, tally)  # one answer for two texts
    assert len(tally.crossed) == 2 and tally.good_texts == 2


@pytest.mark.slow
def test_the_benchmark_command_line(tmp_path):
    """bench/serve_load.py end to end: a tiny model trained on the spot, `bertsent serve` in its own process."""
    out = tmp_path / "load.json"
    command = [sys.executable, str(BENCH / "serve_load.py"), "--model", "tiny", "--clients", "16", "--seconds", "5"]
    command += ["--attackers", "20"]
    command += ["--texts", "128", "--threads", "1", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["passed"] and result["backend"] == "torch" and result["requests"] > 16
    assert result["without_attackers"]["attackers"] == 0 and result["p99_ratio"] > 0
    assert "PASS" in done.stdout
