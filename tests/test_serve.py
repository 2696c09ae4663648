"""`bertsent serve`: real HTTP against uvicorn on a free loopback port (single and batch requests, concurrent
requests each answered with their own text's scores, every kind of bad input, the API key, /health while the
model loads, /metrics, Hugging Face's InferenceClient) and the page in headless Chromium."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest

import bertsent
from bertsent.cli import main
from bertsent.errors import BertsentError
from bertsent.serving.app import create_app
from bertsent.serving.server import uvicorn_config

from conftest import make_reviews

TEXTS, _ = make_reviews(40, seed=5)


@contextmanager
def running(app):
    """The app served by uvicorn in a thread, on a loopback port the OS picked; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if httpx.get(f"{url}/health").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the model did not load")


@pytest.fixture(scope="module")
def reference(trained):
    return bertsent.load(trained)


@pytest.fixture(scope="module")
def server(trained):
    app = create_app(trained, max_texts=8, max_chars=400)
    with running(app) as url:
        wait_ready(url)
        yield url


def scores_of(answer: list[dict], classes: list[str]) -> np.ndarray:
    found = {item["label"]: item["score"] for item in answer}
    return np.array([found[c] for c in classes])


# -- answers -------------------------------------------------------------------------------------


def test_one_text_and_a_batch_match_the_python_api(server, reference):
    classes = reference.classes_
    one = httpx.post(f"{server}/predict", json={"inputs": TEXTS[0]})
    assert one.status_code == 200 and one.headers["content-type"] == "application/json"
    answer = one.json()
    assert [set(item) for item in answer] == [{"label", "score"}] * 2
    assert answer[0]["score"] >= answer[1]["score"]  # most probable first
    expected = reference.predict_proba(TEXTS[:5])
    assert np.allclose(scores_of(answer, classes), expected[0], atol=1e-5)

    batch = httpx.post(f"{server}/predict", json={"inputs": TEXTS[:5]}).json()
    assert len(batch) == 5 and all(isinstance(a, list) for a in batch)
    for answer, row in zip(batch, expected):
        assert np.allclose(scores_of(answer, classes), row, atol=1e-5)
        assert answer[0]["label"] == classes[int(np.argmax(row))]


def test_post_root_answers_a_list_per_text(server, reference):
    one = httpx.post(server, json={"inputs": TEXTS[0]}).json()
    assert len(one) == 1 and len(one[0]) == 2
    assert np.allclose(scores_of(one[0], reference.classes_), reference.predict_proba([TEXTS[0]])[0], atol=1e-5)
    two = httpx.post(server, json={"inputs": TEXTS[:2]}).json()
    assert len(two) == 2


def test_top_k_and_neutral_band(server, trained):
    answer = httpx.post(f"{server}/predict", json={"inputs": TEXTS[0], "parameters": {"top_k": 1}}).json()
    assert len(answer) == 1
    unsure = bertsent.load(trained, neutral_band=0.5)
    unsure.temperature = 1e4  # the tiny model is sure of everything; this makes it doubt everything
    with running(create_app(unsure)) as url:
        wait_ready(url)
        answer = httpx.post(f"{url}/predict", json={"inputs": "the movie"}).json()  # the server's band: 0.5
        assert answer[0]["label"] == "neutral" and len(answer) == 3
        low, high = sorted(item["score"] for item in answer[1:])
        assert answer[0]["score"] == pytest.approx(1 - (high - low))
        sure = httpx.post(f"{url}/predict", json={"inputs": "the movie", "parameters": {"neutral_band": 0}}).json()
        assert "neutral" not in [item["label"] for item in sure] and len(sure) == 2
        top = httpx.post(f"{url}/predict", json={"inputs": "the movie", "parameters": {"top_k": 1}}).json()
        assert [item["label"] for item in top] == ["neutral"]


@pytest.fixture
def hub_online(monkeypatch):
    """The tests run with HF_HUB_OFFLINE=1, under which huggingface_hub refuses every URL, even a local one."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_hugging_face_inference_client_works_unchanged(server, reference, hub_online):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=server)
    found = client.text_classification(TEXTS[1], top_k=2)
    assert len(found) == 2
    expected = reference.predict_proba([TEXTS[1]])[0]
    assert found[0].label == reference.classes_[int(np.argmax(expected))]
    assert found[0].score == pytest.approx(float(expected.max()), abs=1e-5)
    assert client.text_classification(TEXTS[1], top_k=1)[0].label == found[0].label


def test_info_health_openapi_and_page(server, reference):
    info = httpx.get(f"{server}/info").json()
    assert info["labels"] == reference.classes_
    assert info["max_length"] == reference.max_length
    assert info["temperature"] == pytest.approx(reference.temperature)
    assert info["backend"] == "torch" and info["state"] == "ready" and info["batch_size"] == 8
    assert {"bertsent", "torch", "transformers", "fastapi"} <= set(info["versions"])
    assert info["limits"]["max_texts"] == 8
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    spec = httpx.get(f"{server}/openapi.json").json()
    assert "requestBody" in spec["paths"]["/predict"]["post"]
    page = httpx.get(server)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<textarea" in page.text and "http" not in page.text.split("<script>")[1]  # nothing fetched from afar


# -- micro-batching ------------------------------------------------------------------------------


def test_texts_per_model_call_by_backend(tmp_path):
    from bertsent.serving.service import serving_batch_size

    assert serving_batch_size(tmp_path, "auto", "cpu") == 8  # no ONNX export: torch
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model_int8.onnx").write_bytes(b"")
    assert serving_batch_size(tmp_path, "auto", "cpu") == 1  # ONNX Runtime: one text a call is fastest on CPU
    assert serving_batch_size(tmp_path, "torch", "cpu") == 8


def slowed(model, seconds: float):
    """The model, each of its batches taking `seconds` longer: requests pile up meanwhile."""
    score = model.predict_proba

    def predict_proba(texts, progress=None):
        time.sleep(seconds)
        return score(texts)

    model.predict_proba = predict_proba
    return model


def batch_counts(url: str) -> tuple[float, float]:
    """(model calls, requests they answered) from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    calls = requests = 0.0
    for line in text.splitlines():
        if line.startswith("bertsent_batch_requests_count"):
            calls = float(line.split()[-1])
        if line.startswith("bertsent_batch_requests_sum"):
            requests = float(line.split()[-1])
    return calls, requests


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(trained, reference):
    model = slowed(bertsent.load(trained), 0.05)
    expected = reference.predict_proba(TEXTS)
    with running(create_app(model)) as url:
        wait_ready(url)

        def ask(i: int):
            texts = TEXTS[i] if i % 3 else TEXTS[i : i + 3]  # some single texts, some lists
            response = httpx.post(f"{url}/predict", json={"inputs": texts}, timeout=60)
            assert response.status_code == 200, response.text
            return i, response.json()

        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(ask, range(36)))
        for i, answer in answers:
            if i % 3:
                assert np.allclose(scores_of(answer, reference.classes_), expected[i], atol=1e-5), i
            else:
                for j, one in enumerate(answer):
                    assert np.allclose(scores_of(one, reference.classes_), expected[i + j], atol=1e-5), (i, j)
        calls, requests = batch_counts(url)
    assert requests == 36
    assert calls < 36 / 2, f"{calls} model calls for 36 concurrent requests: not batched"


def test_batches_keep_to_the_token_budget(trained):
    model = slowed(bertsent.load(trained), 0.05)
    # Each text is ~10 tokens; a budget of 30 lets about three texts share a model call.
    with running(create_app(model, max_batch_tokens=30)) as url:
        wait_ready(url)
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda t: httpx.post(f"{url}/predict", json={"inputs": t}).status_code, TEXTS[:12]))
            metrics = httpx.get(f"{url}/metrics").text
    assert codes == [200] * 12
    buckets = {}
    for line in metrics.splitlines():
        if line.startswith("bertsent_batch_texts_bucket"):
            buckets[line.split('le="')[1].split('"')[0]] = float(line.split()[-1])
    calls = buckets.pop("+Inf")
    smallest = min(float(le) for le, count in buckets.items() if count == calls)  # holds every model call
    assert calls >= 3 and smallest <= 4


# -- bad input -----------------------------------------------------------------------------------

LONG = "word " * 100  # 500 characters: over the server's 400


@pytest.mark.parametrize(
    ("body", "status", "kind", "message"),
    [
        (b"{not json", 422, "validation", "malformed JSON"),
        (b"", 422, "validation", "malformed JSON"),
        (b'["a text"]', 422, "validation", "JSON object"),
        (b'{"text": "a"}', 422, "validation", "unknown key 'text'"),
        (b'{"parameters": {}}', 422, "validation", 'missing "inputs"'),
        (b'{"inputs": 3}', 422, "validation", "string or a list of strings"),
        (b'{"inputs": ["a", 3]}', 422, "validation", "string or a list of strings"),
        (b'{"inputs": null}', 422, "validation", "string or a list of strings"),
        (b'{"inputs": []}', 422, "validation", "empty list"),
        (b'{"inputs": "a", "parameters": 5}', 422, "validation", '"parameters" must be an object'),
        (b'{"inputs": "a", "parameters": {"topk": 1}}', 422, "validation", "unknown parameter 'topk'"),
        (b'{"inputs": "a", "parameters": {"top_k": 0}}', 422, "validation", "top_k 0"),
        (b'{"inputs": "a", "parameters": {"top_k": "2"}}', 422, "validation", "top_k '2'"),
        (b'{"inputs": "a", "parameters": {"top_k": true}}', 422, "validation", "top_k True"),
        (b'{"inputs": "a", "parameters": {"neutral_band": 1.5}}', 422, "validation", "neutral_band 1.5"),
        (b'{"inputs": "a", "parameters": {"function_to_apply": "sigmoid"}}', 422, "validation", "softmax"),
        (b'{"inputs": "a", "parameters": {"top_k": 2.5}}', 422, "validation", "top_k 2.5"),
        (b'{"inputs": "a", "parameters": {"neutral_band": NaN}}', 422, "validation", "neutral_band nan"),
        (b'{"inputs": "a", "parameters": {"target": "pos"}}', 422, "validation", "unknown parameter 'target'"),
        (b'{"inputs": [["a"]]}', 422, "validation", "string or a list of strings"),
        (json.dumps({"inputs": "a", "parameters": {"top_k": [1] * 9999}}).encode(), 422, "validation", "1,...: must"),
        (b'{"inputs": "a", "parameters": null}', 200, None, None),
        (b'{"inputs": "a", "parameters": {"top_k": null, "function_to_apply": "softmax"}}', 200, None, None),
        (json.dumps({"inputs": ["a"] * 9}).encode(), 413, "too_large", "9 texts in one request; this server takes at"),
        (json.dumps({"inputs": ["a", LONG]}).encode(), 413, "too_large", "text 1 has 500 characters"),
        (json.dumps({"inputs": LONG}).encode(), 413, "too_large", "at most 400 per text"),
    ],
)
@pytest.mark.parametrize("path", ["/predict", "/"])
def test_bad_input_gets_its_status_and_a_message(server, path, body, status, kind, message):
    response = httpx.post(f"{server}{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    if status == 200:
        return
    payload = response.json()
    assert set(payload) == {"error", "error_type"}
    assert payload["error_type"] == kind
    assert message in payload["error"]


def test_openapi_describes_the_bodies_the_server_takes_and_its_refusals(server):
    """The request shape is declared once: the parameters /openapi.json lists are those the server takes (one it
    does not list is refused), and a refusal is documented in the shape it has."""
    spec = httpx.get(f"{server}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path in ("/predict", "/", "/explain"):
        post = spec["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(schemas[body]["properties"]) == {"inputs", "parameters"} and schemas[body]["required"] == ["inputs"]
        refusal = post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert set(schemas[refusal]["properties"]) == {"error", "error_type"}
        assert {"413", "415"} <= set(post["responses"])
    for name in schemas["PredictParameters"]["properties"]:
        value = {"top_k": 1, "neutral_band": 0.1, "function_to_apply": "softmax"}[name]
        response = httpx.post(f"{server}/predict", json={"inputs": "a", "parameters": {name: value}})
        assert response.status_code == 200, (name, response.text)
    assert set(schemas["ExplainParameters"]["properties"]) == {"target", "n_steps"}


def test_arrivals_are_counted_until_queued_or_refused(trained):
    """The batcher waits for requests whose body is in and not yet queued: each is counted once, whatever
    becomes of it (a count left behind would make every batch wait its max_wait_ms)."""
    app = create_app(trained, max_texts=2)
    bodies = [
        b'{"inputs": "a fine film"}',
        b'{"inputs": ["a", "b", "c"]}',  # 413
        b'{"inputs": ["a", "bad \\ud800"]}',  # 422 after Pydantic's checks
        b'{"inputs": 3}',  # 422 from Pydantic
        b'{"inputs": "a", "parameters": {"neutral_band": 2}}',
    ]
    json_type = {"content-type": "application/json"}
    with running(app) as url:
        wait_ready(url)
        arrivals = app.state.service.batcher.arrivals
        with ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda b: httpx.post(f"{url}/predict", content=b, headers=json_type).status_code, bodies * 4)
            )
        assert codes == [200, 413, 422, 422, 422] * 4
        assert arrivals.pending == 0
        assert httpx.post(f"{url}/", content=b"{", headers=json_type).status_code == 422
        assert arrivals.pending == 0 and app.state.service.inflight == 0


def test_unknown_paths_methods_and_huge_bodies_answer_in_the_same_shape(server):
    missing = httpx.get(f"{server}/nowhere")
    assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
    wrong = httpx.get(f"{server}/predict")
    assert wrong.status_code == 405 and wrong.json()["error_type"] == "method_not_allowed"
    # A body declared too large is refused before it is read.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        reply = b""
        while b'"}' not in reply:
            chunk = raw.recv(65536)
            if not chunk:
                break
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and '"error_type":"too_large"' in reply.replace(" ", "")


def test_too_many_requests_in_flight(trained):
    model = slowed(bertsent.load(trained), 0.5)
    with running(create_app(model, max_inflight=1)) as url:
        wait_ready(url)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, f"{url}/predict", json={"inputs": "one"}, timeout=30)
            time.sleep(0.2)
            second = pool.submit(httpx.post, f"{url}/predict", json={"inputs": "two"}, timeout=30)
            codes = [first.result().status_code, second.result()]
        assert codes[0] == 200
        assert codes[1].status_code == 429 and codes[1].json()["error_type"] == "overloaded"
        assert httpx.post(f"{url}/predict", json={"inputs": "three"}).status_code == 200  # room again
        assert 'bertsent_errors_total{kind="overloaded"} 1.0' in httpx.get(f"{url}/metrics").text


# -- loading, metrics, the key -------------------------------------------------------------------


def test_health_is_503_until_the_model_is_loaded(trained):
    release = threading.Event()

    def slow_load():
        release.wait(30)
        return bertsent.load(trained)

    with running(create_app(slow_load)) as url:
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503
        assert health.json()["error_type"] == "not_ready" and "loading" in health.json()["error"]
        early = httpx.post(f"{url}/predict", json={"inputs": "a"})
        assert early.status_code == 503
        assert httpx.get(f"{url}/info").json()["state"] == "loading"
        assert "bertsent_model_loaded 0.0" in httpx.get(f"{url}/metrics").text
        release.set()
        wait_ready(url, timeout=30)
        assert httpx.post(f"{url}/predict", json={"inputs": "a"}).status_code == 200
        assert "bertsent_model_loaded 1.0" in httpx.get(f"{url}/metrics").text


def test_a_model_that_fails_to_load_says_why(tmp_path):
    def broken():
        raise BertsentError("no such model folder")

    with running(create_app(broken)) as url:
        deadline = time.time() + 10
        while httpx.get(f"{url}/info").json()["state"] == "loading" and time.time() < deadline:
            time.sleep(0.02)
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and "no such model folder" in health.json()["error"]


def test_metrics_count_requests_errors_latency_and_batches(trained):
    with running(create_app(trained, max_texts=2)) as url:
        wait_ready(url)
        for _ in range(3):
            assert httpx.post(f"{url}/predict", json={"inputs": "a fine film"}).status_code == 200
        httpx.post(f"{url}/predict", content=b"{", headers={"content-type": "application/json"})
        httpx.post(f"{url}/predict", json={"inputs": ["a", "b", "c"]})
        text = httpx.get(f"{url}/metrics").text
    assert 'bertsent_requests_total{method="POST",path="/predict",status="200"} 3.0' in text
    assert 'bertsent_requests_total{method="POST",path="/predict",status="422"} 1.0' in text
    assert 'bertsent_requests_total{method="POST",path="/predict",status="413"} 1.0' in text
    assert 'bertsent_errors_total{kind="validation"} 1.0' in text
    assert 'bertsent_errors_total{kind="too_large"} 1.0' in text
    assert 'bertsent_request_seconds_count{path="/predict"} 5.0' in text
    assert "bertsent_batch_texts_count 3.0" in text
    assert "bertsent_texts_total 3.0" in text


def test_api_key(trained, hub_online):
    from huggingface_hub import InferenceClient

    with running(create_app(trained, api_key="s3cret")) as url:
        wait_ready(url)  # /health, the page and the OpenAPI description stay open
        assert httpx.get(url).status_code == 200
        assert httpx.get(f"{url}/openapi.json").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in (("POST", "/predict"), ("POST", "/"), ("GET", "/info"), ("GET", "/metrics")):
                response = httpx.request(method, f"{url}{path}", json={"inputs": "a"}, headers=headers)
                assert response.status_code == 401, (headers, path)
                assert response.json()["error_type"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
        # A bad body without the key: the key is checked first.
        assert httpx.post(f"{url}/predict", content=b"{", headers={"Authorization": "x"}).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.post(f"{url}/predict", json={"inputs": "a"}, headers=good).status_code == 200
        assert httpx.get(f"{url}/info", headers=good).status_code == 200
        found = InferenceClient(model=url, token="s3cret").text_classification("a fine film", top_k=2)
        assert len(found) == 2
        assert 'bertsent_errors_total{kind="unauthorized"}' in httpx.get(f"{url}/metrics", headers=good).text


# -- explanations over HTTP ----------------------------------------------------------------------


def test_explain_endpoint(server, reference):
    one = httpx.post(f"{server}/explain", json={"inputs": "the acting was wonderful"}, timeout=60)
    assert one.status_code == 200, one.text
    record = one.json()
    assert record["words"] == ["the", "acting", "was", "wonderful"]
    assert len(record["scores"]) == 4 and record["target"] == record["label"]
    assert record["offsets"][3] == [15, 24]
    other = next(c for c in reference.classes_ if c != record["label"])
    flipped = httpx.post(
        f"{server}/explain", json={"inputs": ["the acting was wonderful"], "parameters": {"target": other}}
    ).json()
    assert isinstance(flipped, list) and flipped[0]["target"] == other
    bad = httpx.post(f"{server}/explain", json={"inputs": "a", "parameters": {"target": "nope"}})
    assert bad.status_code == 422 and "target 'nope'" in bad.json()["error"]
    steps = httpx.post(f"{server}/explain", json={"inputs": "a", "parameters": {"n_steps": 0}})
    assert steps.status_code == 422
    many = httpx.post(f"{server}/explain", json={"inputs": ["a"] * 5})
    assert many.status_code == 413


def test_explain_endpoint_without_captum(server, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    response = httpx.post(f"{server}/explain", json={"inputs": "a"})
    assert response.status_code == 501
    assert "pip install 'bertsent[explain]'" in response.json()["error"]


# -- the command line ----------------------------------------------------------------------------


def capture_server_run(monkeypatch, seen: dict) -> None:
    """uvicorn.Server.run replaced: what it would serve, and how, lands in `seen` (app, host, port, config). The
    socket is bound to a free port (the one asked for may be taken on a shared machine)."""
    import uvicorn

    from bertsent.serving import server as serve

    bind = serve.listening_socket
    monkeypatch.setattr(
        serve, "listening_socket", lambda host, port: seen.update(host=host, port=port) or bind(host, 0)
    )
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda server, sockets: seen.update(app=server.config.app, config=server.config)
    )


def test_cli_serve_passes_its_settings_and_warns_on_an_open_host(trained, monkeypatch, capsys):
    seen = {}
    capture_server_run(monkeypatch, seen)
    monkeypatch.delenv("BERTSENT_API_KEY", raising=False)
    argv = ["serve", str(trained), "--host", "0.0.0.0", "--port", "9123", "--max-texts", "3", "--body-timeout", "4"]
    assert main([*argv, "--header-timeout", "2", "--max-client-connections", "0", "--cors-origin", "https://a.b"]) == 0
    err = capsys.readouterr().err
    assert "Warning: serving on 0.0.0.0 without an API key" in err
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9123 and seen["config"].timeout_graceful_shutdown
    service = seen["app"].state.service
    assert service.limits.max_texts == 3 and service.api_key is None
    assert (service.limits.header_timeout_s, service.limits.body_timeout_s, service.limits.max_client_connections) == (
        2,
        4,
        0,
    )
    assert any("CORS" in str(m.cls) for m in seen["app"].user_middleware)

    monkeypatch.setenv("BERTSENT_API_KEY", "from-env")
    assert main(["serve", str(trained), "--host", "0.0.0.0"]) == 0
    assert "Warning" not in capsys.readouterr().err
    assert seen["app"].state.service.api_key == "from-env"
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8000

    assert main(["serve", str(trained)]) == 0  # local: no warning, even without a key
    monkeypatch.delenv("BERTSENT_API_KEY")
    assert main(["serve", str(trained)]) == 0
    assert "Warning" not in capsys.readouterr().err and seen["host"] == "127.0.0.1"


def test_cli_serve_refuses_a_missing_folder_and_bad_limits(trained, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["serve", str(trained), "--max-texts", "0"]) == 2
    assert "--max-texts 0: must be a number of at least 1" in capsys.readouterr().err
    assert main(["serve", str(trained), "--body-timeout", "0"]) == 2
    assert "--body-timeout 0.0: must be a number of at least 0.01" in capsys.readouterr().err


def test_cli_serve_refuses_a_backend_the_folder_lacks(trained, capsys):
    assert main(["serve", str(trained), "--backend", "onnx-int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bertsent export" in err


# -- the page ------------------------------------------------------------------------------------


def test_page_in_headless_chromium(server):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - no Chromium on this machine
            pytest.skip(f"no headless Chromium: {exc}")
        try:
            page = browser.new_page()
            page.goto(server)
            page.fill("#text", "the acting was wonderful and the story moving")
            page.click("#submit")
            page.wait_for_selector("#words .w", timeout=30_000)
            label = page.text_content("#label")
            assert label.split()[0] in ("positive", "negative")
            bars = page.query_selector_all("#bars .bar")
            assert len(bars) == 2
            widths = [float(b.query_selector(".fill").get_attribute("style").split(":")[1].strip(" %;")) for b in bars]
            assert sum(widths) == pytest.approx(100, abs=0.3) and widths[0] >= widths[1]
            words = page.query_selector_all("#words .w")
            assert [w.text_content() for w in words][:3] == ["the", "acting", "was"]
            shades = [w.evaluate("node => getComputedStyle(node).backgroundColor") for w in words]
            assert any(s not in ("rgba(0, 0, 0, 0)", "transparent") for s in shades)
            assert page.text_content("#words") == "the acting was wonderful and the story moving"
            assert page.text_content("#target") == label.split()[0]
        finally:
            browser.close()
