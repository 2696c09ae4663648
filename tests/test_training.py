"""The training loop: learns, keeps the best epoch, writes a complete folder, resumes exactly."""

import json

import numpy as np
import pytest
import torch

import bertsent
from bertsent.data.sources import TextDataset
from bertsent.training import TrainConfig, auto_max_length, fit

from conftest import make_reviews, watch_forward


def _datasets(n_train=160, n_val=40, classes=("negative", "positive")):
    tx, ty = make_reviews(n_train, seed=1, classes=classes)
    vx, vy = make_reviews(n_val, seed=2, classes=classes)
    return TextDataset(tx, ty, name="train"), TextDataset(vx, vy, name="val")


def test_fit_writes_complete_model_folder(tiny_model_dir, tmp_path):
    train, val = _datasets()
    config = TrainConfig(model=str(tiny_model_dir), epochs=6, batch_size=16, lr=5e-3)
    result = fit(train, val, config, tmp_path / "model", progress=False, log=lambda *_: None)
    folder = tmp_path / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "bertsent.json", "metrics.jsonl"):
        assert (folder / name).exists(), name
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    meta = json.loads((folder / "bertsent.json").read_text())
    assert meta["labels"] == ["negative", "positive"]
    assert meta["data"]["train"]["fingerprint"] == train.fingerprint()
    assert meta["settings"]["epochs"] == 6 and meta["versions"]["torch"] == torch.__version__
    config_json = json.loads((folder / "config.json").read_text())
    assert config_json["id2label"] == {"0": "negative", "1": "positive"}
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r and "split" not in r]
    assert len(steps) == result.settings["epochs"] * 10  # 160 examples / batch 16, one record per step
    # Steps are read from the device in groups; every record still comes out whole and in order.
    assert [r["step"] for r in steps] == list(range(1, 61))
    assert all(isinstance(r["loss"], float) and isinstance(r["grad_norm"], float) and r["lr"] >= 0 for r in steps)
    assert all(set(r) == {"step", "epoch", "loss", "grad_norm", "lr", "samples_per_s"} for r in steps)
    assert steps[-1]["samples_per_s"] > 0 and steps[0]["loss"] > steps[-1]["loss"]
    assert [r["epoch"] for r in lines if r.get("split") == "validation"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # The kept model is the best epoch's, and it learned the toy task.
    best = max(result.history, key=lambda h: h["accuracy"])
    assert result.best_epoch == best["epoch"]
    assert result.metrics["accuracy"] >= 0.9


def test_three_classes_end_to_end(tiny_model_dir, tmp_path):
    train, val = _datasets(240, 60, classes=("negative", "neutral", "positive"))
    config = TrainConfig(model=str(tiny_model_dir), epochs=8, batch_size=16, lr=5e-3)
    fit(train, val, config, tmp_path / "m3", progress=False, log=lambda *_: None)
    model = bertsent.load(tmp_path / "m3")
    assert model.classes_ == ["negative", "neutral", "positive"]
    probs = model.predict_proba(val.texts)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    accuracy = np.mean(np.array(model.predict(val.texts)) == np.array(val.labels))
    assert accuracy > 0.8


def test_existing_output_needs_overwrite(tiny_model_dir, tmp_path):
    train, val = _datasets(32, 8)
    (tmp_path / "taken").mkdir()
    with pytest.raises(bertsent.BertsentError, match="--overwrite"):
        fit(
            train,
            val,
            TrainConfig(model=str(tiny_model_dir), epochs=1),
            tmp_path / "taken",
            progress=False,
            log=lambda *_: None,
        )


@pytest.mark.parametrize("packing", [False, True])
def test_resume_gives_the_same_model_bit_for_bit(packing, tiny_model_dir, tmp_path):
    train, val = _datasets(96, 24)
    settings = dict(model=str(tiny_model_dir), epochs=2, batch_size=16, lr=3e-3, checkpoint_every=4, packing=packing)
    quiet = dict(progress=False, log=lambda *_: None)
    fit(train, val, TrainConfig(**settings), tmp_path / "straight", **quiet)

    # Crash in step 8: the checkpoint at the end of the first epoch (step 6 of 16 examples each) is the last one.
    crashed = tmp_path / "crashed"
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def failing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("simulated crash")
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = failing_step
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(train, val, TrainConfig(**settings), crashed, **quiet)
    finally:
        torch.optim.AdamW.step = original
    checkpoint = tmp_path / ".crashed.partial" / "checkpoint"
    assert not crashed.exists() and (checkpoint / "state.json").exists()
    # No pickle: the settings and positions in JSON, the tensors in one safetensors file, nothing else.
    assert sorted(p.suffix for p in checkpoint.iterdir()) == [".json", ".safetensors"]
    assert json.loads((checkpoint / "state.json").read_text())["state"]["position"]["step"] == 6
    with pytest.raises(bertsent.BertsentError, match="left a checkpoint .* with --resume, or pass --overwrite"):
        fit(train, val, TrainConfig(**settings), crashed, **quiet)  # a rerun without --resume deletes nothing
    fit(train, val, TrainConfig(**settings), crashed, resume=True, **quiet)

    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(crashed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    log_b = (crashed / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "samples_per_s"} for x in lines]  # noqa
    assert strip(log_a) == strip(log_b)


def test_resume_without_checkpoint_is_a_user_error(tiny_model_dir, tmp_path):
    train, val = _datasets(32, 8)
    with pytest.raises(bertsent.BertsentError, match="no checkpoint"):
        fit(train, val, TrainConfig(model=str(tiny_model_dir)), tmp_path / "x", resume=True, progress=False)


class _Planted:
    """What an attacker would put in a checkpoint: unpickling it runs code (here: writes a file)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_a_planted_checkpoint(tiny_model_dir, tmp_path):
    import torch

    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / ".x.partial" / "checkpoint" / "state.pt"  # where formats 1-3 kept theirs
    checkpoint.parent.mkdir(parents=True)
    torch.save({"format": 3, "model": _Planted(str(marker))}, checkpoint)
    train, val = _datasets(32, 8)
    with pytest.raises(bertsent.BertsentError, match="written by another version of bertsent .*not read"):
        fit(train, val, TrainConfig(model=str(tiny_model_dir)), tmp_path / "x", resume=True, progress=False)
    assert not marker.exists()
    # A pickle planted under the new names is no more use: safetensors and JSON readers never unpickle.
    torch.save({"model": _Planted(str(marker))}, checkpoint.parent / "tensors-000000001-00000000.safetensors")
    (checkpoint.parent / "state.json").write_text(
        json.dumps({"format": 4, "tensors": "tensors-000000001-00000000.safetensors", "state": {}})
    )
    with pytest.raises(bertsent.BertsentError, match="checkpoint .* is damaged or not bertsent's"):
        fit(train, val, TrainConfig(model=str(tiny_model_dir)), tmp_path / "x", resume=True, progress=False)
    assert not marker.exists()


def test_unseen_eval_labels_are_refused(tiny_model_dir, tmp_path):
    train, _ = _datasets(32, 8)
    val = TextDataset(["meh"] * 4, ["neutral", "positive", "negative", "neutral"], name="val.csv")
    with pytest.raises(bertsent.DataError, match="'neutral' do not occur in the training"):
        fit(train, val, TrainConfig(model=str(tiny_model_dir)), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


FACTS = dict(parameters=22_000_000, max_positions=512, token_lengths=[10, 20, 30], packing_supported=True)


def test_tutorial_recipe_settings():
    config = TrainConfig(recipe="tutorial").resolve(**FACTS)
    assert (config.max_length, config.batch_size, config.lr, config.optimizer, config.epochs) == (
        512,
        6,
        2e-5,
        "adam",
        1,
    )
    assert config.pad_to_max_length and not config.length_bucketing and config.micro_batch_size == 6
    assert TrainConfig(recipe="tutorial", batch_size=8).resolve(**FACTS).batch_size == 8


def test_auto_max_length():
    assert auto_max_length([10] * 99 + [1000], 512) == 32
    assert auto_max_length([700] * 10, 512) == 512
    assert auto_max_length(list(range(1, 101)), 512) == 128


def test_attention_dropout_is_set_on_the_model(tiny_model_dir, tmp_path):
    train, val = _datasets(32, 8)
    config = TrainConfig(model=str(tiny_model_dir), epochs=1, attention_dropout=0.0)
    fit(train, val, config, tmp_path / "m", progress=False, log=lambda *_: None, report=False)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.0 and saved["hidden_dropout_prob"] == 0.1
    meta = json.loads((tmp_path / "m" / "bertsent.json").read_text())
    assert meta["settings"]["attention_dropout"] == 0.0


# ----------------------------------------------------------------------------- evaluation, selection, stopping

QUIET = dict(progress=False, log=lambda *_: None, report=False)


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_early_stopping_stops_after_n_evaluations_without_gain(tiny_model_dir, tmp_path):
    # Validation labels are the opposite of the training signal: once the model learns, validation loss rises.
    train, val = _datasets(96, 32)
    flipped = TextDataset(val.texts, ["positive" if y == "negative" else "negative" for y in val.labels], name="v")
    said = []
    config = TrainConfig(model=str(tiny_model_dir), epochs=20, batch_size=16, lr=5e-3, metric="loss",
                         eval_every=2, early_stopping=2)  # fmt: skip
    result = fit(train, flipped, config, tmp_path / "m", **QUIET | {"log": said.append})
    steps = [r for r in _records(tmp_path / "m") if "split" not in r]
    assert len(steps) < 20 * 6  # stopped before the last epoch
    losses = [h["loss"] for h in result.history]
    best = losses.index(min(losses))
    assert len(losses) - 1 - best == 2  # exactly two evaluations without gain after the best
    assert result.best_epoch == result.history[best]["epoch"]
    assert "Early stopping: no gain in loss for 2 evaluation(s)." in said


def test_eval_every_adds_evaluations_between_epochs(tiny_model_dir, tmp_path):
    train, val = _datasets(96, 16)  # 6 steps an epoch
    config = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=16, lr=5e-3, eval_every=4)
    result = fit(train, val, config, tmp_path / "m", **QUIET)
    evaluations = [r for r in _records(tmp_path / "m") if r.get("split") == "validation"]
    assert [r["step"] for r in evaluations] == [4, 6, 8, 12]  # every 4 steps, and at the end of each epoch
    assert [r["epoch"] for r in evaluations] == [0.667, 1.0, 1.333, 2.0]
    assert [h["step"] for h in result.history] == [4, 6, 8, 12]


@pytest.mark.parametrize("metric", ["loss", "f1_macro", "accuracy"])
def test_the_metric_picks_the_kept_model(metric, tiny_model_dir, tmp_path):
    train, val = _datasets(96, 32)
    config = TrainConfig(model=str(tiny_model_dir), epochs=4, batch_size=16, lr=5e-3, metric=metric,
                         eval_every=3, calibrate=False)  # fmt: skip
    result = fit(train, val, config, tmp_path / "m", **QUIET)
    sign = -1 if metric == "loss" else 1
    scores = [sign * h[metric] for h in result.history]
    best = result.history[scores.index(max(scores))]  # the first of equals: a later tie is no gain
    assert result.best_epoch == best["epoch"]
    # The folder holds that evaluation's weights: the saved model scores what the kept evaluation scored.
    assert result.metrics["loss"] == pytest.approx(best["loss"], abs=1e-4)
    logits = bertsent.load(tmp_path / "m").decision_function(val.texts)
    assert np.mean(np.array(["negative", "positive"])[logits.argmax(1)] == np.array(val.labels)) == pytest.approx(
        best["accuracy"]
    )


def test_calibration_fits_a_temperature_and_no_calibrate_keeps_one(tiny_model_dir, tmp_path):
    train, val = _datasets(96, 32)
    settings = dict(model=str(tiny_model_dir), epochs=4, batch_size=16, lr=5e-3)
    calibrated = fit(train, val, TrainConfig(**settings), tmp_path / "c", **QUIET)
    plain = fit(train, val, TrainConfig(**settings, calibrate=False), tmp_path / "p", **QUIET)
    meta_c = json.loads((tmp_path / "c" / "bertsent.json").read_text())
    meta_p = json.loads((tmp_path / "p" / "bertsent.json").read_text())
    assert meta_p["temperature"] == 1.0 and plain.metrics["temperature"] == 1.0
    assert meta_c["temperature"] != 1.0
    assert calibrated.metrics["log_loss"] <= calibrated.metrics["log_loss_uncalibrated"] + 1e-9
    assert plain.metrics["log_loss"] == pytest.approx(plain.metrics["log_loss_uncalibrated"])
    assert bertsent.load(tmp_path / "p").temperature == 1.0


# ----------------------------------------------------------------------------- batches as asked


@pytest.fixture
def batch_shapes(monkeypatch):
    """The (rows, width) of every training batch that models loaded by fit() see."""
    shapes = []

    def before(k):
        if "labels" in k:  # training batches; evaluation passes no labels
            shapes.append(tuple(k["input_ids"].shape))

    watch_forward(monkeypatch, before)
    return shapes


def test_max_tokens_caps_the_padded_tokens_of_every_batch(tiny_model_dir, tmp_path, batch_shapes):
    texts, labels = make_reviews(120, seed=1)
    texts = [t + " " + " ".join(["long"] * (i % 40)) for i, t in enumerate(texts)]  # 6 to 50 tokens
    train = TextDataset(texts, labels, name="varied")
    config = TrainConfig(model=str(tiny_model_dir), epochs=1, batch_size=32, max_tokens=200, validation_fraction=0)
    fit(train, None, config, tmp_path / "m", **QUIET)
    assert sum(rows for rows, _ in batch_shapes) == 120  # every example once
    assert all(rows * width <= 200 for rows, width in batch_shapes), batch_shapes
    assert max(rows for rows, _ in batch_shapes) > 4  # short texts still share a batch
    meta = json.loads((tmp_path / "m" / "bertsent.json").read_text())
    assert meta["settings"]["max_tokens"] == 200


@pytest.fixture(scope="module")
def tiny_512_dir(minilm_dir, tmp_path_factory):
    """A tiny random BERT that takes 512 tokens, as the tutorial recipe pads to."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-512")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir, model_max_length=512).save_pretrained(folder)
    return folder


def test_the_tutorial_recipe_trains_padded_to_512_with_adam_at_a_constant_rate(
    tiny_512_dir, tmp_path, batch_shapes, monkeypatch
):
    steps = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or original(self, *a, **k))
    train, val = _datasets(24, 8)
    result = fit(train, val, TrainConfig(model=str(tiny_512_dir), recipe="tutorial"), tmp_path / "m", **QUIET)
    assert batch_shapes == [(6, 512)] * 4  # batch 6, padded to 512, one epoch
    assert len(steps) == 4  # plain Adam (AdamW is a subclass with its own step)
    records = [r for r in _records(tmp_path / "m") if "split" not in r]
    assert [r["lr"] for r in records] == [2e-5] * 4 and not any("grad_norm" in r for r in records)  # no clipping
    assert result.settings["optimizer"] == "adam" and result.settings["max_length"] == 512


# ----------------------------------------------------------------------------- the model folder


def _crash_at_step(monkeypatch, n: int):
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def failing_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("simulated crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)


def test_overwrite_replaces_a_folder_only_once_the_new_one_is_complete(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "m"
    out.mkdir()
    (out / "mine.txt").write_text("keep until replaced")
    train, val = _datasets(32, 8)
    config = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=16, lr=5e-3)
    with monkeypatch.context() as patch:
        _crash_at_step(patch, 3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(train, val, config, out, overwrite=True, **QUIET)
    assert (out / "mine.txt").read_text() == "keep until replaced"  # the crash left the old folder whole
    fit(train, val, config, out, overwrite=True, **QUIET)
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no partial or old folder left behind


def test_resume_refuses_other_training_data(tiny_model_dir, tmp_path, monkeypatch):
    train, val = _datasets(64, 8)
    config = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=16, checkpoint_every=2)
    with monkeypatch.context() as patch:
        _crash_at_step(patch, 4)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(train, val, config, tmp_path / "m", **QUIET)
    other = TextDataset(train.texts[:-1] + ["a different review"], train.labels, name="train")
    with pytest.raises(bertsent.BertsentError, match="--resume: the training data differs from the checkpoint's"):
        fit(other, val, config, tmp_path / "m", resume=True, **QUIET)
    fit(train, val, config, tmp_path / "m", resume=True, **QUIET)  # the same data resumes
    assert (tmp_path / "m" / "model.safetensors").exists()
