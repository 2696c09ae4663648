"""The GPU throughput paths, at toy size on the CPU: compiled training on a few shapes with the eager losses, no
read from the device per step, the device's default settings, bf16 scoring, an MPNet model."""

from __future__ import annotations

import functools
import importlib
import json
import random
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

import bertsent
from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError
from bertsent.modeling.batching import Collator, as_4d_padding_mask, bucket_rows, bucket_widths, takes_4d_padding_mask
from bertsent.modeling.inference import predict_logits
from bertsent.modeling.tokens import encode
from bertsent.training import TrainConfig, records
from bertsent.training import config as config_module

from conftest import FILLER, NEGATIVE_WORDS, POSITIVE_WORDS

FIT = importlib.import_module("bertsent.training.fit")  # the module (bertsent.training.fit is the function)
SRC = str(Path(bertsent.__file__).parent)


def varied_reviews(n: int, seed: int = 0) -> TextDataset:
    """Reviews of 3 to 100 words, so batches come in many widths."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 100))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE_WORDS if i % 2 else NEGATIVE_WORDS))
        texts.append(" ".join(words))
        labels.append(label)
    return TextDataset(texts, labels, name="varied")


def _train(model_dir, out, data, **settings):
    settings = dict(epochs=2, batch_size=8, lr=1e-3, max_length=128, validation_fraction=0.0) | settings
    return bertsent.train(
        data, None, out=out, model=str(model_dir), progress=False, log=lambda *_: None, report=False,
        calibrate=False, **settings,
    )  # fmt: skip


def _losses(out) -> list[float]:
    """The training steps' losses (not the validation's)."""
    records = map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if "loss" in r and "split" not in r]


def test_bucket_widths_and_rows_are_few():
    assert bucket_widths(512) == (64, 128, 256, 512)
    assert bucket_widths(384) == (64, 128, 256, 384)
    assert bucket_widths(40) == (40,)
    assert [bucket_rows(n, 32) for n in (1, 2, 3, 5, 17, 32)] == [1, 2, 4, 8, 32, 32]
    assert bucket_rows(20, 24) == 24
    collate = Collator(0, widths=(64, 128))
    assert collate([([1] * 70, 0), ([2] * 3, 1)])["input_ids"].shape == (2, 128)


def test_compiled_training_gives_the_eager_losses(no_dropout_dir, tmp_path, monkeypatch):
    # aot_eager: the graph capture and autograd tracing torch.compile does, without a C compiler or minutes of
    # code generation on a small CPU; the shapes, the filler rows and the loss are the same as with inductor.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    data = varied_reviews(36)
    _train(no_dropout_dir, tmp_path / "eager", data)
    _train(no_dropout_dir, tmp_path / "compiled", data, compile=True)
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 10  # 5 steps an epoch, the last of 4 sequences padded to 4 rows
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)


def test_compiled_training_sees_a_bounded_number_of_shapes(tiny_model_dir, tmp_path, monkeypatch):
    shapes, masks = set(), set()

    class Recorder(torch.nn.Module):  # in place of the compiled network: what it would be called with
        def __init__(self, network, **_):
            super().__init__()
            self.network = network

        def forward(self, **batch):
            shapes.add(tuple(batch["input_ids"].shape))
            masks.add(tuple(batch["attention_mask"].shape[1:3]))  # always given (one graph per shape), in 4-D
            return self.network(**batch)

    monkeypatch.setattr(torch, "compile", Recorder)
    data = varied_reviews(50, seed=1)
    _train(tiny_model_dir, tmp_path / "m", data, compile=True)
    widths = {w for _, w in shapes}
    assert widths <= set(bucket_widths(128)) and len(widths) == 2  # many lengths, two widths
    assert {rows for rows, _ in shapes} == {8, 2}  # full batches, and the epoch's last 2 sequences
    assert masks == {(1, 1)}


def test_compile_modes_are_checked():
    assert TrainConfig(compile=True).compile == "default"
    assert TrainConfig(compile="reduce-overhead").compile == "reduce-overhead"
    assert TrainConfig(compile=None).compile is False
    with pytest.raises(BertsentError, match="--compile fast: unknown mode"):
        TrainConfig(compile="fast")


@pytest.mark.parametrize("compiled", [False, True])
def test_no_number_read_from_the_device_per_step(compiled, tiny_model_dir, tmp_path, monkeypatch):
    """Reading a tensor's value (item, tolist, bool, float, int, numpy, cpu) makes the host wait for the GPU. No
    step reads one, in bertsent's code or in the model's (transformers checks a 2-D padding mask, not the 4-D
    one it is given); the records are read in groups (here: once, after the loop)."""
    monkeypatch.setattr(records, "FLUSH_SECONDS", 1e9)
    if compiled:
        monkeypatch.setattr(torch, "compile", lambda network, **_: network)
    reads = []
    inside = [False]
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            if inside[0] and not caller.filename.endswith(
                "bertsent/modeling/batching.py"
            ):  # host tensors, before the copy
                reads.append((_name, Path(caller.filename).name, caller.lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    loop = FIT.train_loop

    def train_loop(run):
        inside[0] = True
        try:
            loop(run)
        finally:
            inside[0] = False

    monkeypatch.setattr(FIT, "train_loop", train_loop)
    _train(tiny_model_dir, tmp_path / "m", varied_reviews(48), compile=compiled, max_grad_norm=1.0)
    assert len(_losses(tmp_path / "m")) == 12
    assert reads == []


def test_a_4d_padding_mask_gives_the_same_logits(trained):
    model = bertsent.load(trained)
    assert takes_4d_padding_mask(model.model)
    for texts in (["great", "an awful, boring and painful film"], ["great film", "awful film"]):  # padded, not
        ids = encode(model.tokenizer, texts, 128, "head")
        batch = model.collator([(x, None) for x in ids])
        with torch.no_grad():
            usual = model.model(**batch).logits
            given = model.model(**as_4d_padding_mask(dict(batch))).logits
        torch.testing.assert_close(given, usual, rtol=1e-5, atol=1e-5)


def test_device_defaults_apply_on_their_device_only(monkeypatch):
    monkeypatch.setitem(config_module.DEVICE_DEFAULTS, "cuda", {"fast": {"batch_size": 128, "lr": 2e-4}})
    given = TrainConfig(max_length=128)
    kwargs = dict(parameters=22_000_000, max_positions=512, token_lengths=[10, 20], packing_supported=True)
    on_gpu = given.resolve(**kwargs, device_type="cuda")
    on_cpu = given.resolve(**kwargs, device_type="cpu")
    assert (on_gpu.batch_size, on_gpu.lr) == (128, 2e-4)
    assert (on_cpu.batch_size, on_cpu.lr) == (32, 1e-4)
    assert TrainConfig(max_length=128, batch_size=16).resolve(**kwargs, device_type="cuda").batch_size == 16


def test_bf16_scoring_gives_the_fp32_labels(trained, monkeypatch):
    from bertsent.prediction.backends import TorchBackend
    from bertsent.runtime import scoring_dtype

    assert scoring_dtype(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: True)
    assert scoring_dtype(torch.device("cuda")) is torch.bfloat16  # what TorchBackend scores in on such a GPU
    assert TorchBackend(torch.nn.Linear(1, 1), None, torch.device("cpu")).autocast_dtype is None

    model = bertsent.load(trained)
    texts = varied_reviews(40, seed=3).texts
    ids = encode(model.tokenizer, texts, 128, "head")
    fp32 = predict_logits(model.model, ids, model.collator, 16, device=torch.device("cpu"))
    bf16 = predict_logits(
        model.model, ids, model.collator, 16, device=torch.device("cpu"), autocast_dtype=torch.bfloat16
    )
    assert (bf16.argmax(1) == fp32.argmax(1)).all()
    probabilities = lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)  # noqa: E731
    assert np.abs(probabilities(bf16) - probabilities(fp32)).max() < 0.02


def test_an_mpnet_model_trains(minilm_dir, tmp_path):
    """MPNet (the BERT-base-sized model the GPU run fine-tunes), tiny and random, with the packaged WordPiece
    vocabulary: it loads, trains and predicts through bertsent (no packing: MPNet is not BERT-architecture)."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    torch.manual_seed(0)
    folder = tmp_path / "tiny-mpnet"
    config = MPNetConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=130, pad_token_id=0,
    )  # fmt: skip
    MPNetModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_dir, model_max_length=128).save_pretrained(folder)
    data = varied_reviews(32)
    result = _train(folder, tmp_path / "m", data, packing=True)
    assert len(_losses(tmp_path / "m")) == 8 and result.settings["packing"] is False
    model = bertsent.load(tmp_path / "m")
    assert type(model.model).__name__ == "MPNetForSequenceClassification"
    assert len(model.predict(data.texts[:3])) == 3
