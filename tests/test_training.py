"""The training loop: learns, keeps the best epoch, writes a complete folder, resumes exactly."""

import json

import numpy as np
import pytest
import torch

import bertsent
from bertsent.data import TextDataset
from bertsent.training import TrainConfig, auto_max_length, fit

from conftest import make_reviews


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

    # Crash after step 7: the checkpoint at step 4 is the last one.
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
    assert not crashed.exists() and (tmp_path / ".crashed.partial" / "checkpoint" / "state.pt").exists()
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
