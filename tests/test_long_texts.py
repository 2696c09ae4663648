"""Texts longer than the model's length: cut (head, tail, head+tail) or scored in overlapping windows whose
logits are averaged; the default length is the one the model was trained at."""

from __future__ import annotations

import numpy as np
import pytest

import bertsent
from bertsent.errors import BertsentError
from bertsent.modeling.loading import load_tokenizer, tokenize, truncate, windows


def _tokens(n_body: int):
    """A text of n_body tokens 100..: [CLS]=1 body [SEP]=2, with its special-tokens mask."""
    return [([1, *range(100, 100 + n_body), 2], [1] + [0] * n_body + [1])]


def test_windows_cover_every_token_with_the_special_tokens_at_both_ends():
    (ids, special) = _tokens(23)[0]
    out, owner = windows([(ids, special)], max_length=10, stride=4)
    room = 8
    assert owner == [0] * len(out)
    assert all(w[0] == 1 and w[-1] == 2 and len(w) == 10 for w in out)
    bodies = [w[1:-1] for w in out]
    assert [b[0] - 100 for b in bodies] == [0, 4, 8, 12, 15]  # the last one flush with the end
    covered = {t for b in bodies for t in b}
    assert covered == set(range(100, 123)) and all(len(b) == room for b in bodies)


def test_short_texts_are_one_window_and_owners_follow_the_texts():
    tokens = _tokens(3) + _tokens(30) + _tokens(5)
    out, owner = windows(tokens, max_length=16, stride=7)
    assert owner[0] == 0 and owner[-1] == 2 and set(owner[1:-1]) == {1}
    assert out[0] == tokens[0][0] and out[-1] == tokens[2][0]
    assert len(out) == 2 + len(range(0, 30 - 14, 7)) + 1


def test_a_window_of_the_whole_length_is_head_truncation(trained):
    tokenizer = load_tokenizer(trained)
    tokens = tokenize(tokenizer, ["one two three " * 40])
    out, _ = windows(tokens, max_length=20, stride=20)
    assert out[0] == truncate(tokens, 20, "head")[0]


def test_windows_average_the_logits_of_the_windows(trained):
    """A text built to exceed the limit: its logits are the mean of its windows' logits, scored one by one."""
    model = bertsent.load(trained, max_length=16, stride=8, long="windows")
    text = "the plot was wonderful and superb " * 6 + "awful dull and painful " * 6
    tokens = tokenize(model.tokenizer, [text])
    parts, _ = windows(tokens, 16, 8)
    assert len(parts) > 3
    each = model.backend.logits(parts)
    np.testing.assert_allclose(model.decision_function([text])[0], each.mean(axis=0), atol=1e-5)
    # and each window alone is what the head cut of that window's text gives
    head = bertsent.load(trained, max_length=16, long="head")
    np.testing.assert_allclose(head.decision_function([text])[0], each[0], atol=1e-5)


def test_strategies_differ_only_on_long_texts(trained):
    short = ["loved it, brilliant", "dull and awful"]
    long_text = "awful dull and painful " * 10 + "wonderful superb brilliant " * 10
    results = {}
    for long in ("head", "tail", "head+tail", "windows"):
        model = bertsent.load(trained, long=long, max_length=24)
        assert model.long == long
        results[long] = model.decision_function([*short, long_text])
    for long, logits in results.items():
        np.testing.assert_allclose(logits[:2], results["head"][:2], atol=1e-5, err_msg=long)
    assert not np.allclose(results["head"][2], results["tail"][2], atol=1e-4)
    assert results["head"][2].argmax() == 0 and results["tail"][2].argmax() == 1  # what each end says


def test_defaults_come_from_the_training(trained):
    import json

    meta = json.loads((trained / "bertsent.json").read_text())
    model = bertsent.load(trained)
    assert model.max_length == meta["max_length"] and model.long == "windows"
    assert model.stride == model.max_length - 2  # side by side: [CLS] and [SEP] in each window
    assert bertsent.load(trained, stride=5).stride == 5
    assert bertsent.load(trained, max_length=100).max_length == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"long": "middle"}, r"--long middle: use one of head, tail, head\+tail, windows"),
        ({"max_length": 4}, r"--max-length 4: must be a whole number of at least 8"),
        ({"max_length": 4096}, r"--max-length 4096: the model takes at most 128 tokens"),
        ({"stride": 0}, r"--stride 0: must be a whole number"),
        ({"max_length": 16, "stride": 17}, r"--stride 17: must not exceed the window, 16 tokens"),
        ({"batch_size": 0}, r"--batch-size 0: must be a whole number of at least 1"),
        ({"backend": "gpu"}, r"backend 'gpu': use one of auto, torch, onnx, onnx-int8"),
        ({"backend": "onnx-int8"}, r"has no onnx/model_int8.onnx. Export it first: bertsent export .* --int8"),
    ],
)
def test_bad_settings_are_refused_before_any_work(trained, kwargs, message):
    with pytest.raises(BertsentError, match=message):
        bertsent.load(trained, **kwargs)


def test_evaluate_with_windows_reports_how_it_ran(trained, tmp_path, capsys):
    from conftest import make_reviews

    texts, labels = make_reviews(30, seed=5)
    data = bertsent.TextDataset([(t + " ") * 8 for t in texts], labels, name="long toy")
    metrics = bertsent.evaluate(trained, data, long="windows", max_length=24, stride=12, progress=True)
    assert metrics["model"] == {
        "backend": "torch",
        "long": "windows",
        "max_length": 24,
        "stride": 12,
        "temperature": pytest.approx(metrics["model"]["temperature"]),
    }
    assert metrics["accuracy"] > 0.6
    assert "30/30 rows" in capsys.readouterr().err  # the progress bar, on stderr
