"""Model resolution (aliases, folders, Hub ids offline), folder checks, truncation, and other architectures."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import bertsent
from bertsent.errors import ModelError
from bertsent.modeling import hub
from bertsent.modeling.tokens import encode

from conftest import make_reviews, train_toy


@pytest.fixture
def hub_state(monkeypatch):
    """Forget what an earlier test learnt about the Hub's reachability."""
    monkeypatch.setattr(hub, "_HUB_REACHABLE", {})
    return monkeypatch


# ----------------------------------------------------------------------------- resolving a spec


def test_alias_and_local_folder(minilm_dir, tiny_model_dir):
    assert Path(hub.resolve_model("minilm")) == minilm_dir
    assert Path(hub.resolve_model(None)) == minilm_dir  # the default
    assert hub.resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


@pytest.mark.parametrize("spec", ["./nope", "/no/such/model", "~/no-such-model-folder", "a/b/c"])
def test_missing_folders(spec):
    with pytest.raises(ModelError, match="no such model folder.*bertsent models"):
        hub.resolve_model(spec)


@pytest.mark.parametrize(
    "remove,missing",
    [
        (["config.json"], "config.json"),
        (["model.safetensors"], "model weights"),
        (["tokenizer.json", "vocab.txt"], "tokenizer files"),
    ],
)
def test_incomplete_model_folder(tiny_model_dir, tmp_path, remove, missing):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    for name in remove:
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelError, match=f"not a complete model folder, missing {missing}"):
        hub.resolve_model(str(folder))


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is a file, not a model folder"):
        hub.check_model_folder(tmp_path / "model.bin")


def test_a_base_model_is_not_a_classifier(tiny_model_dir):
    with pytest.raises(ModelError, match="has no label names .*bertsent train --model"):
        hub.check_model_folder(tiny_model_dir, need_classifier=True)


def test_damaged_config_is_a_model_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").write_text("{broken")
    with pytest.raises(ModelError, match="config.json: damaged"):
        hub.check_model_folder(folder, need_classifier=True)


def test_damaged_weights_are_a_model_error(tiny_model_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load the model folder .*damaged"):
        hub.load_classifier(str(folder), ["a", "b"])


# ----------------------------------------------------------------------------- Hub ids offline


def test_hub_id_with_offline_flag_fails_at_once(hub_state):
    hub_state.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    with pytest.raises(
        ModelError,
        match="'bert-base-uncased': not a local folder or alias, not in the Hugging "
        "Face cache, and HF_HUB_OFFLINE is set.*--model /path/to/model",
    ):
        hub.resolve_model("bert-base-uncased")
    assert time.time() - started < 2


def _online_mode(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_unreachable_hub_fails_fast_without_the_offline_flag(hub_state):
    _online_mode(hub_state)
    hub_state.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    started = time.time()
    with pytest.raises(ModelError, match="the Hugging Face Hub cannot be reached \\(offline\\?\\)"):
        hub.resolve_model("some-org/some-model")
    assert time.time() - started < 5


def test_a_hub_that_never_answers_times_out(hub_state):
    import urllib.request

    _online_mode(hub_state)
    hub_state.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(30))
    started = time.time()
    assert hub.hub_reachable(timeout=0.5) is False
    assert time.time() - started < 2


def test_offline_hub_id_uses_the_hugging_face_cache(hub_state, tiny_model_dir, tmp_path):
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--bertsent-tests--tiny-bert"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    hub_state.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub_state.setenv("HF_HUB_OFFLINE", "1")
    assert hub.resolve_model("bertsent-tests/tiny-bert") == str(repo / "snapshots" / ("0" * 40))
    assert hub.load_tokenizer("bertsent-tests/tiny-bert").vocab_size == 30522


# ----------------------------------------------------------------------------- truncation


def test_head_tail_and_head_plus_tail_truncation(tiny_model_dir):
    tokenizer = hub.load_tokenizer(str(tiny_model_dir))
    words = [f"w{i}" for i in range(40)]
    text = " ".join(["alpha"] + ["movie"] * 60 + ["omega"])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    alpha, omega = tokenizer.convert_tokens_to_ids(["alpha", "omega"])
    (head,), (length,) = encode(tokenizer, [text], 16, "head", return_lengths=True)
    assert length == 64 and len(head) == 16 and head[0] == cls and head[1] == alpha and head[-1] == sep
    (tail,) = encode(tokenizer, [text], 16, "tail")
    assert len(tail) == 16 and tail[-2] == omega and alpha not in tail
    (both,) = encode(tokenizer, [text], 16, "head+tail")
    assert len(both) == 16 and alpha in both and omega in both
    short = encode(tokenizer, [" ".join(words[:3])], 16, "head")[0]
    assert short == tokenizer(" ".join(words[:3]))["input_ids"]
    with pytest.raises(ValueError):
        encode(tokenizer, ["x"], 16, "middle")


# ----------------------------------------------------------------------------- other architectures


def _tiny_distilbert(tiny_model_dir, folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # WordPiece, reused
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    DistilBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE trained on the toy reviews; end-of-text doubles as padding."""
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as bpe_models
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    torch.manual_seed(0)
    texts, _ = make_reviews(300, classes=("negative", "neutral", "positive"))
    bpe = Tokenizer(bpe_models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    eot = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=eot, bos_token=eot, unk_token=eot, pad_token=eot, model_max_length=128
    )
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    GPT2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("architecture", ["distilbert", "gpt2"])
def test_other_architectures_train_predict_and_load_in_a_pipeline(architecture, tiny_model_dir, tmp_path):
    from transformers import pipeline

    base = (
        _tiny_distilbert(tiny_model_dir, tmp_path / "base")
        if architecture == "distilbert"
        else _tiny_gpt2(tmp_path / "base")
    )
    val_texts, val_labels = make_reviews(40, seed=2)
    train_toy(base, tmp_path / "m", make_reviews(160, seed=1), epochs=6)
    model = bertsent.load(tmp_path / "m")
    assert model.model.config.model_type == architecture
    predicted = model.predict(val_texts)
    assert np.mean(np.array(predicted) == np.array(val_labels)) >= 0.8
    classify = pipeline("text-classification", model=str(tmp_path / "m"), device="cpu")
    assert [r["label"] for r in classify(val_texts[:16])] == predicted[:16]


def test_fp16_checkpoint_trains_in_float32(tiny_model_dir, tmp_path):
    """transformers 5 keeps a checkpoint's dtype by default; training needs fp32 master weights."""
    import shutil

    import torch
    from transformers import AutoModel

    from bertsent.modeling.hub import load_classifier

    half = tmp_path / "half"
    AutoModel.from_pretrained(tiny_model_dir).half().save_pretrained(half)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, half / name)
    model = load_classifier(str(half), ["negative", "positive"])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
