"""Batch invariance, the contract: a text's probabilities are its probabilities alone (within 1e-5), whatever
texts share its batch, for every backend (torch, onnx, onnx-int8) and every way in (one text, a list,
`predict --file` of any size, the server under concurrent clients)."""

from __future__ import annotations

import json
import random
import shutil
import threading

import numpy as np
import pytest

import bertsent
from bertsent.data.sources import TextDataset
from bertsent.prediction import export

from conftest import FILLER, NEGATIVE_WORDS, POSITIVE_WORDS, make_reviews

TOLERANCE = 1e-5
BACKENDS = ("torch", "onnx", "onnx-int8")


def _texts(n: int, seed: int) -> list[str]:
    """Reviews of 1 to ~150 words (the tiny model reads 128 tokens: some are cut), in no particular order."""
    rng = random.Random(seed)
    words = FILLER + POSITIVE_WORDS + NEGATIVE_WORDS
    return [" ".join(rng.choices(words, k=rng.choice([1, 2, 5, 12, 30, 70, 150]))) for _ in range(n)]


@pytest.fixture(scope="module")
def int8_folder(trained, tmp_path_factory):
    """A copy of the trained tiny BERT with its fp32 and int8 exports (int8 calibrated on labeled texts)."""
    folder = tmp_path_factory.mktemp("invariance") / "model"
    shutil.copytree(trained, folder)
    texts, labels = make_reviews(40, seed=2)
    export.export_onnx(folder, int8=True, data=TextDataset(texts, labels, name="toy val"), max_drop=100, log=print)
    assert (folder / "onnx" / "model_int8.onnx").is_file()
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_texts_probabilities_do_not_depend_on_its_neighbours(int8_folder, backend):
    model = bertsent.load(int8_folder, backend=backend, device="cpu", batch_size=8)
    targets = _texts(12, seed=1)
    alone = np.stack([model.predict_proba([text])[0] for text in targets])
    rng = random.Random(7)
    worst = 0.0
    for trial in range(6):  # random neighbours of mixed lengths, the targets among them in random places
        batch = _texts(rng.choice([3, 17, 40]), seed=100 + trial) + targets
        rng.shuffle(batch)
        probs = model.predict_proba(batch)
        for i, text in enumerate(targets):
            worst = max(worst, float(np.abs(probs[batch.index(text)] - alone[i]).max()))
    assert worst <= TOLERANCE, f"{backend}: a text's probabilities moved by {worst:.2g} with its neighbours"


def test_predict_file_of_any_size_gives_each_row_its_own_answer(int8_folder, tmp_path):
    from bertsent.cli import main

    rows = _texts(30, seed=3)
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("\n".join(rows[:5]) + "\n")
    large.write_text("\n".join(_texts(170, seed=4) + rows) + "\n")  # the same rows among 170 others
    model = bertsent.load(int8_folder, backend="onnx-int8")
    alone = {text: model.predict_proba([text])[0] for text in rows}
    for source in (small, large):
        out = tmp_path / f"{source.stem}.jsonl"
        assert (
            main(["predict", str(int8_folder), "--file", str(source), "--out", str(out), "--backend", "onnx-int8"]) == 0
        )
        for line in out.read_text().splitlines():
            record = json.loads(line)
            if record["text"] in alone:
                probs = [record["probs"][name] for name in model.classes_]
                assert np.abs(np.array(probs) - alone[record["text"]]).max() <= TOLERANCE, source.name


def test_the_server_answers_each_client_as_if_alone_under_32_concurrent_clients(int8_folder):
    httpx = pytest.importorskip("httpx")
    from test_serve import running, wait_ready

    from bertsent.serving.app import create_app

    texts = _texts(64, seed=5)
    reference = bertsent.load(int8_folder, backend="onnx-int8")
    alone = {text: reference.predict_proba([text])[0] for text in texts}
    classes = reference.classes_
    failures, answers = [], []
    with running(create_app(int8_folder, load_options={"backend": "onnx-int8"})) as url:
        wait_ready(url)
        start = threading.Barrier(32)

        def client(k: int) -> None:
            mine = texts[k * 2 : k * 2 + 2] if k % 2 else [texts[k * 2]]  # one text or two per request
            try:
                with httpx.Client(timeout=60) as http:
                    start.wait()
                    for _ in range(3):
                        response = http.post(f"{url}/predict", json={"inputs": mine})
                        response.raise_for_status()
                        answers.append((mine, response.json()))
            except Exception as exc:  # noqa: BLE001 - reported below, in the test's thread
                failures.append(repr(exc))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert not failures, failures[:3]
    assert len(answers) == 96
    worst = 0.0
    for sent, payload in answers:
        for text, scored in zip(sent, payload):
            got = {row["label"]: row["score"] for row in scored}
            worst = max(worst, float(np.abs(np.array([got[c] for c in classes]) - alone[text]).max()))
    assert worst <= TOLERANCE, f"a client's answer moved by {worst:.2g} with the other clients' texts"


def test_onnx_threads_spin_unless_told_not_to_and_the_server_tells_them(int8_folder):
    """ONNX Runtime's threads spin between operations (fastest alone); the server's sleep instead, leaving the
    cores to its event loop."""
    from bertsent.serving.limits import Limits
    from bertsent.serving.service import Service

    def spinning(model) -> str:
        options = model.backend.session.get_session_options()
        try:
            return options.get_session_config_entry("session.intra_op.allow_spinning")
        except RuntimeError:  # not set: ONNX Runtime's default, spinning
            return "1"

    assert spinning(bertsent.load(int8_folder, backend="onnx-int8")) == "1"
    assert spinning(bertsent.load(int8_folder, backend="onnx-int8", spinning=False)) == "0"
    served = Service(int8_folder, Limits(), None, {"backend": "onnx-int8"})._open()
    assert spinning(served) == "0"
    assert served.predict_proba(["fine"]) == pytest.approx(bertsent.load(int8_folder).predict_proba(["fine"]))
