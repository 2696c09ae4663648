"""Texts longer than the model's length: cut (head, tail, head+tail) or scored in overlapping windows whose
logits are averaged; the default length is the one the model was trained at."""

from __future__ import annotations

import numpy as np
import pytest

import bertsent
from bertsent.errors import BertsentError
from bertsent.modeling.hub import load_tokenizer
from bertsent.modeling.tokens import tokenize, truncate, windows


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
    model = bertsent.load(trained, max_length=16, stride=8, truncation="windows")
    text = "the plot was wonderful and superb " * 6 + "awful dull and painful " * 6
    tokens = tokenize(model.tokenizer, [text])
    parts, _ = windows(tokens, 16, 8)
    assert len(parts) > 3
    each = model.backend.logits(parts)
    np.testing.assert_allclose(model.decision_function([text])[0], each.mean(axis=0), atol=1e-5)
    # and each window alone is what the head cut of that window's text gives
    head = bertsent.load(trained, max_length=16, truncation="head")
    np.testing.assert_allclose(head.decision_function([text])[0], each[0], atol=1e-5)


def test_strategies_differ_only_on_long_texts(trained):
    short = ["loved it, brilliant", "dull and awful"]
    long_text = "awful dull and painful " * 10 + "wonderful superb brilliant " * 10
    results = {}
    for truncation in ("head", "tail", "head+tail", "windows"):
        model = bertsent.load(trained, truncation=truncation, max_length=24)
        assert model.truncation == truncation
        results[truncation] = model.decision_function([*short, long_text])
    for truncation, logits in results.items():
        np.testing.assert_allclose(logits[:2], results["head"][:2], atol=1e-5, err_msg=truncation)
    assert not np.allclose(results["head"][2], results["tail"][2], atol=1e-4)
    assert results["head"][2].argmax() == 0 and results["tail"][2].argmax() == 1  # what each end says


def test_defaults_come_from_the_training(trained):
    import json

    meta = json.loads((trained / "bertsent.json").read_text())
    model = bertsent.load(trained)
    assert model.max_length == meta["max_length"] and model.truncation == "windows"
    assert model.stride == model.max_length - 2  # side by side: [CLS] and [SEP] in each window
    assert bertsent.load(trained, stride=5).stride == 5
    assert bertsent.load(trained, max_length=100).max_length == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"truncation": "middle"}, r"--truncation middle: use one of head, tail, head\+tail, windows"),
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
    metrics = bertsent.evaluate(trained, data, truncation="windows", max_length=24, stride=12, progress=True)
    assert metrics["model"] == {
        "backend": "torch",
        "truncation": "windows",
        "max_length": 24,
        "stride": 12,
        "temperature": pytest.approx(metrics["model"]["temperature"]),
    }
    assert metrics["accuracy"] > 0.6
    assert "30/30 rows" in capsys.readouterr().err  # the progress bar, on stderr


# -- one cutter: training, its validation, prediction and the server cut a text the same way ---------------

CUT_TEXTS = [
    "awful dull and painful " * 12 + "wonderful superb brilliant " * 12,  # about 130 tokens: cut or windowed
    "loved it, brilliant",  # short: the same whatever the strategy
    "wonderful superb " * 30,
]


class _Stop(Exception):
    """Raised once training has built its validation set: the test needs its inputs, not a trained model."""


def _training_inputs(tiny_model_dir, tmp_path, monkeypatch, truncation: str, stride: int | None):
    """The model inputs a run builds for CUT_TEXTS: as training examples and as validation, with their owners."""
    import importlib

    fit_module = importlib.import_module("bertsent.training.fit")
    seen = {}

    def examples(tokens, labels, config):
        seen["train"] = fit_module.encode_examples.__wrapped__(tokens, labels, config)
        return seen["train"]

    examples.__wrapped__ = fit_module.encode_examples

    class Recorded(fit_module.ValidationSet):
        def __init__(self, ids, *args, owner=None, **kwargs):
            seen["validation"] = (ids, owner)
            raise _Stop

    monkeypatch.setattr(fit_module, "encode_examples", examples)
    monkeypatch.setattr(fit_module, "ValidationSet", Recorded)
    labels = ["negative", "positive", "positive"]
    windows_only = dict(stride=stride, max_windows=99) if truncation == "windows" else {}
    config = bertsent.TrainConfig(model=str(tiny_model_dir), truncation=truncation, max_length=24, **windows_only)
    data = bertsent.TextDataset(CUT_TEXTS, labels, name="cut")
    with pytest.raises(_Stop):
        bertsent.training.fit(data, data, config, tmp_path / "run", progress=False, log=lambda *_: None, report=False)
    return seen["train"], seen["validation"]


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail", "windows"])
def test_training_validation_prediction_and_the_cutter_give_the_same_inputs(
    truncation, trained, tiny_model_dir, tmp_path, monkeypatch
):
    from bertsent.defaults import TRUNCATIONS
    from bertsent.modeling.tokens import model_inputs

    assert truncation in TRUNCATIONS
    stride = 10 if truncation == "windows" else None
    (train_ids, train_labels, train_owner), (val_ids, val_owner) = _training_inputs(
        tiny_model_dir, tmp_path, monkeypatch, truncation, stride
    )
    predictor = bertsent.load(trained, backend="torch", truncation=truncation, max_length=24, stride=stride)
    scored = []
    run = predictor.backend.logits
    predictor.backend.logits = lambda ids, progress=None: scored.append(ids) or run(ids, progress=progress)
    predictor.predict(CUT_TEXTS)

    expected, owner = model_inputs(tokenize(predictor.tokenizer, CUT_TEXTS), truncation, 24, stride)
    assert scored == [expected]
    assert (val_ids, val_owner) == (expected, owner)
    assert (train_ids, train_owner) == (expected, owner)
    if truncation == "windows":
        assert len(expected) > len(CUT_TEXTS) and owner[0] == 0 and owner[-1] == 2
        assert train_labels == [[0, 1, 1][text] for text in owner]  # each window with its text's label
    else:
        assert owner is None and len(expected) == 3 and all(len(ids) <= 24 for ids in expected)
    short = expected[owner.index(1) if owner else 1]
    assert short == tokenize(predictor.tokenizer, CUT_TEXTS[1:2])[0][0]  # a short text is whole


def test_max_windows_keeps_windows_spread_over_the_text_first_and_last():
    from bertsent.modeling.tokens import model_inputs

    tokens = _tokens(100) + _tokens(3)
    every, owner = model_inputs(tokens, "windows", 12, 10)
    assert owner.count(0) == 10
    kept, kept_owner = model_inputs(tokens, "windows", 12, 10, max_windows=4)
    assert kept_owner == [0, 0, 0, 0, 1]
    assert kept == [every[i] for i in (0, 3, 6, 9, 10)]
    assert model_inputs(tokens, "windows", 12, 10, max_windows=50) == (every, owner)


def test_the_cutter_refuses_what_it_does_not_know():
    from bertsent.modeling.tokens import model_inputs

    with pytest.raises(ValueError, match="truncation must be one of"):
        model_inputs(_tokens(30), "middle", 12)
    with pytest.raises(ValueError, match="needs a stride"):
        model_inputs(_tokens(30), "windows", 12)


def test_the_server_counts_the_tokens_the_model_runs(trained):
    """The batcher's token budget counts the inputs the cutter makes: each window as long as it is."""
    pytest.importorskip("fastapi")
    from bertsent.modeling.tokens import model_inputs
    from bertsent.serving.batcher import Batcher

    predictor = bertsent.load(trained, backend="torch", max_length=24, stride=7)
    batcher = object.__new__(Batcher)  # cost() reads only the model: no worker thread needed
    batcher.model = predictor
    for truncation in ("head", "windows"):
        predictor.truncation = truncation
        ids, _ = model_inputs(tokenize(predictor.tokenizer, CUT_TEXTS), truncation, 24, 7)
        assert batcher.cost(CUT_TEXTS) == sum(map(len, ids))


# -- `long`, the old name of `truncation`, still works ------------------------------------------------------


def test_long_is_the_old_name_of_truncation(trained):
    text = [CUT_TEXTS[0]]
    with pytest.warns(DeprecationWarning, match="`long` is now `truncation`") as caught:
        old = bertsent.load(trained, long="tail", max_length=24)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    new = bertsent.load(trained, truncation="tail", max_length=24)
    assert old.truncation == "tail"
    np.testing.assert_allclose(old.decision_function(text), new.decision_function(text), atol=1e-6)
    with pytest.warns(DeprecationWarning):
        assert new.long == "tail"
    with pytest.warns(DeprecationWarning):
        new.long = "head"
    assert new.truncation == "head"
    with pytest.raises(BertsentError, match="long is truncation's old name"):
        bertsent.load(trained, long="tail", truncation="head")


def test_long_still_works_in_evaluate_and_predict_file(trained, tmp_path):
    from conftest import make_reviews

    texts, labels = make_reviews(10, seed=5)
    data = bertsent.TextDataset([(t + " ") * 6 for t in texts], labels, name="long toy")
    with pytest.warns(DeprecationWarning):
        old = bertsent.evaluate(trained, data, long="head", max_length=24)
    new = bertsent.evaluate(trained, data, truncation="head", max_length=24)
    assert old["model"]["truncation"] == "head" and old["accuracy"] == new["accuracy"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(data.texts) + "\n")
    with pytest.warns(DeprecationWarning):
        result = bertsent.predict_file(trained, source, tmp_path / "out.jsonl", long="head", progress=False)
    assert result["rows"] == 10


def test_the_command_line_takes_truncation_and_long_alike():
    from bertsent.cli.parser import build_parser, prediction_settings

    parser = build_parser()
    for command in (["predict", "runs/x", "a text"], ["evaluate", "runs/x", "--data", "d.csv"], ["serve", "runs/x"]):
        given = [prediction_settings(parser.parse_args([*command, f, "tail"])) for f in ("--long", "--truncation")]
        assert given[0] == given[1] and given[0]["truncation"] == "tail", command
