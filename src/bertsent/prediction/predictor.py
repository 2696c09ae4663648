"""Predictions from a trained model folder: `bertsent.load(DIR).predict(texts)`."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bertsent.checks import choice, whole
from bertsent.defaults import BACKENDS, TRUNCATIONS
from bertsent.errors import BertsentError
from bertsent.evaluation.metrics import check_neutral_band, labels_from_proba, softmax
from bertsent.files import partial_folder, publish_folder
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator
from bertsent.modeling.tokenizer_file import transformers_tokenizer
from bertsent.modeling.tokens import mean_by_owner, model_inputs, tokenize
from bertsent.prediction import backends
from bertsent.runtime import device_type, pick_device

# Texts longer than the model's length are scored in windows of the training length, side by side, whose logits
# are averaged: on IMDB reviews this scored best for a model trained on short snippets (0.87 against 0.79 for
# head+tail at 512 tokens), and overlapping windows were slower and no better (bench/RESULTS.md, "Long texts").
DEFAULT_TRUNCATION = "windows"
_WHOLE = "must be a whole number of at least {}"  # the words of a refused option, wrong type or too small

__all__ = ["BACKENDS", "TRUNCATIONS", "SentimentModel", "load"]


class SentimentModel:
    """A trained classifier with scikit-learn's shape: predict, predict_proba, classes_.

    Texts are cut to `max_length` tokens (default: the length the model was trained at, from bertsent.json)
    as `truncation` says (training's values): keep the head, the tail, both, or score every window of
    max_length tokens, `stride` tokens apart (default: a whole window, so windows sit side by side), and average
    the windows' logits.
    `backend` picks what runs the model: torch, or an ONNX export (`bertsent export`); "auto" takes the ONNX
    one on CPU when the folder has one. `long` is `truncation`'s old name: it still works, with a
    DeprecationWarning. With an ONNX backend nothing imports torch (tokenizers and ONNX Runtime run it) until the
    PyTorch model or its device is asked for (`model`, `device`, `explain`, `save`).
    """

    def __init__(
        self,
        model,
        tokenizer,
        metadata: dict | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        neutral_band: float | None = None,
        *,
        truncation: str | None = None,
        stride: int | None = None,
        backend: str = "auto",
        threads: int | None = None,
        spinning: bool = True,
        folder: str | os.PathLike | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        long: str | None = None,
    ):
        truncation = renamed_long(long, truncation)
        check_neutral_band(neutral_band)
        # for the lazy model
        self.loading: dict[str, Any] = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        self.metadata = metadata or {}
        self.folder = Path(folder) if folder is not None else None
        self._device_asked = device
        self._device = None
        self.tokenizer = tokenizer
        self.batch_size = whole("batch_size", batch_size, 1, rule=_WHOLE.format(1))
        self._model = model
        if model is not None:
            config = model.config
        else:
            assert self.folder is not None, "give the model, or its folder"
            config = hub.read_config(self.folder)
        self.classes_ = [config.id2label[i] for i in range(config.num_labels)]
        limit = hub.model_max_length(tokenizer, config)
        self.max_length = _max_length(max_length, self.metadata.get("max_length"), limit)
        self.truncation = choice(
            "truncation", truncation or DEFAULT_TRUNCATION, TRUNCATIONS, rule=f"use one of {', '.join(TRUNCATIONS)}"
        )
        room = max(1, self.max_length - tokenizer.num_special_tokens_to_add())
        if stride is not None:
            stride = whole("stride", stride, 1, rule=_WHOLE.format(1))
        self.stride = stride or self._trained_stride() or room
        if self.stride > self.max_length:
            raise BertsentError(f"--stride {self.stride}: must not exceed the window, {self.max_length} tokens.")
        self.neutral_band = neutral_band
        self.collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side)
        self.backend_name = _resolved_backend(backend, self.folder, device)
        if threads is not None:
            threads = whole("threads", threads, 1, rule=_WHOLE.format(1))
        self.backend = self._open_backend(threads, spinning)
        exported = backends.onnx_temperature(self.folder, self.backend_name) if self.folder else None
        self.temperature = float(exported or self.metadata.get("temperature", 1.0))

    @property
    def device(self):
        """The torch device the PyTorch model runs on; with an ONNX backend, picked when first asked for."""
        if self._device is None:
            self._device = pick_device(self._device_asked)
        return self._device

    @property
    def long(self) -> str:
        """`truncation`'s old name (deprecated)."""
        _warn_long()
        return self.truncation

    @long.setter
    def long(self, value: str) -> None:
        _warn_long()
        self.truncation = value

    def _trained_stride(self) -> int | None:
        """A model trained on windows (`--truncation windows`) is scored in the windows it learned from: its
        stride, at its training length; None otherwise."""
        meta = self.metadata
        stride = meta.get("stride")
        if meta.get("truncation") != "windows" or meta.get("max_length") != self.max_length:
            return None
        usable = isinstance(stride, int) and not isinstance(stride, bool) and 1 <= stride <= self.max_length
        return stride if usable else None

    def _open_backend(self, threads: int | None, spinning: bool):
        if self.backend_name == "torch":
            return backends.TorchBackend(self.model, self.collator, self.device, self.batch_size, threads)
        assert self.folder is not None  # an ONNX backend is picked from a folder's files
        return backends.OnnxBackend(
            backends.onnx_path(self.folder, self.backend_name), self.collator, self.batch_size, threads, spinning
        )

    @property
    def model(self):
        """The PyTorch model; with an ONNX backend, loaded only when asked for (e.g. by `save`)."""
        if self._model is None:
            self._model = hub.load_classifier(self.folder, **self.loading)
            hub.set_padding_token(self._model, self.tokenizer)
        return self._model

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike,
        backend: str = "auto",
        device: str | None = None,
        *,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> SentimentModel:
        folder = Path(model_dir).expanduser()
        check_weights(folder, backend, device, allow_pickle)  # before the tokenizer: refused at once
        metadata = hub.read_metadata(folder)
        loading: dict[str, Any] = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        on_torch = _resolved_backend(backend, folder, device) == "torch"
        tokenizer = hub.load_tokenizer(folder, trust_remote_code=trust_remote_code, light=not on_torch)
        model = None
        if on_torch:
            model = hub.load_classifier(folder, **loading)
            hub.set_padding_token(model, tokenizer)
        return cls(model, tokenizer, metadata, device=device, backend=backend, folder=folder, **loading, **kwargs)

    def _texts(self, texts) -> list[str]:
        if isinstance(texts, str):
            raise BertsentError("predict takes a list of texts, not one string: predict([text]).")
        if isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
            raise BertsentError(f"predict takes a list of texts, not a {type(texts).__name__}: predict([text]).")
        texts = list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:  # None, numbers, NaN were once scored as the texts "", "3", "nan"
            item = texts[bad]
            kind = type(item).__name__
            shown = "None" if item is None else f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({str(item)[:40]!r})"
            raise BertsentError(
                f"text {bad + 1} is {shown}, not a string. Give strings only (drop missing texts; str(x) scores "
                f"a value as text)."
            )
        return texts

    def decision_function(self, texts, return_lengths: bool = False, progress=None):
        """Raw logits, one row per text (a long text's windows averaged); with return_lengths, also each text's
        length in tokens before truncation. `progress`, when given, is called with fractions of texts done."""
        texts = self._texts(texts)
        if not texts:  # the tokenizer fails on an empty batch
            empty = np.zeros((0, len(self.classes_)), dtype=np.float32)
            return (empty, []) if return_lengths else empty
        tokens = tokenize(self.tokenizer, texts)
        lengths = [len(ids) for ids, _ in tokens]
        ids, owner = model_inputs(tokens, self.truncation, self.max_length, self.stride)
        del tokens
        report = None
        if progress is not None:
            share = len(texts) / len(ids)
            report = lambda n: progress(n * share)  # noqa: E731  (windows done, in texts)
        logits = self.backend.logits(ids, progress=report)
        if owner is not None and len(ids) > len(texts):
            logits = mean_by_owner(logits, owner, len(texts))
        return (logits, lengths) if return_lengths else logits

    def predict_proba(self, texts, progress=None) -> np.ndarray:
        """Calibrated class probabilities (temperature-scaled softmax), columns in `classes_` order."""
        return softmax(self.decision_function(texts, progress=progress), self.temperature)

    def predict(self, texts) -> list[str]:
        return self.labels_from_proba(self.predict_proba(texts))

    def labels_from_proba(self, probs: np.ndarray) -> list[str]:
        """Labels for probabilities: the most probable class, or "neutral" within the neutral band."""
        return labels_from_proba(probs, self.classes_, self.neutral_band)

    def predict_records(self, texts, progress=None) -> list[dict]:
        """[{"text", "label", "probs": {label: p}}] for each text."""
        texts = self._texts(texts)
        probs = self.predict_proba(texts, progress=progress)
        labels = self.labels_from_proba(probs)
        return [
            {"text": t, "label": label, "probs": {c: round(float(p), 6) for c, p in zip(self.classes_, row)}}
            for t, label, row in zip(texts, labels, probs)
        ]

    def explain(self, texts, target=None, n_steps: int | None = None, internal_batch_size: int | None = None):
        """Word attributions (layer integrated gradients, `bertsent.evaluation.explain`) of each text for its predicted
        class, or `target`: one label, or one per text. Returns `Explanation`s (words, scores, label, target,
        probabilities, convergence delta). `n_steps` default: 12 for a 200-token text, more for a shorter one.
        Runs the PyTorch model whatever the backend; long texts are explained on their first `max_length`
        tokens. Needs Captum: pip install 'bertsent[explain]'."""
        from bertsent.evaluation.explain import explain

        return explain(
            self.model,
            self.tokenizer,
            self._texts(texts),
            target,
            n_steps=n_steps,
            max_length=self.max_length,
            temperature=self.temperature,
            internal_batch_size=internal_batch_size,
        )

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (weights, tokenizer, bertsent.json); an existing folder is replaced whole."""
        import json

        out = Path(folder).expanduser()
        work = partial_folder(out)
        shutil.rmtree(work, ignore_errors=True)
        self.model.save_pretrained(work, safe_serialization=True)
        transformers_tokenizer(self.tokenizer).save_pretrained(work)
        (work / hub.METADATA_FILE).write_text(json.dumps(self.metadata, indent=2))
        publish_folder(work, out)
        return out


def _max_length(asked: int | None, trained: int | None, limit: int) -> int:
    """The tokens per text or window: as asked, else the training length (the lengths the model knows)."""
    if asked is None:
        return min(trained or limit, limit)
    asked = whole("max_length", asked, 8, rule=_WHOLE.format(8))
    if asked > limit:
        raise BertsentError(f"--max-length {asked}: the model takes at most {limit} tokens.")
    return asked


def check_weights(folder: Path, backend: str = "auto", device: str | None = None, allow_pickle: bool = False):
    """A complete classifier folder, whose weights the chosen backend can load without pickle (unless
    `allow_pickle`): refused before anything is loaded, or a server started."""
    hub.check_model_folder(folder, need_classifier=True)
    if _resolved_backend(backend, folder, device) == "torch":
        hub.check_safe_weights(folder, allow_pickle)


def _resolved_backend(backend: str, folder: Path | None, device: str | None) -> str:
    """The backend `backend` stands for (`backends.resolve_backend`). The device, which may import torch to be
    known, is asked for only where it counts: for auto, or when named (a device this machine lacks is refused)."""
    asked = backend == "auto" or device not in (None, "auto")
    return backends.resolve_backend(backend, folder, device_type(device) if asked else "cpu")


def load(model_dir: str | os.PathLike, **kwargs: Any) -> SentimentModel:
    """Load a model folder written by `bertsent train` (or any HF sequence-classification folder).

    Keywords: backend (auto|torch|onnx|onnx-int8), device, batch_size, max_length, truncation
    (head|tail|head+tail|windows; `long` is its deprecated old name), stride, neutral_band, threads, spinning
    (ONNX Runtime's threads wait busily between operations: fastest when nothing else runs; `bertsent serve`
    turns it off, as its event loop shares the cores);
    allow_pickle (load pytorch_model.bin when the folder has no safetensors weights: a crafted file can run
    code), trust_remote_code (run Python code shipped with the model)."""
    return SentimentModel.load(model_dir, **kwargs)


def renamed_long(long: str | None, truncation: str | None) -> str | None:
    """`truncation`, also when given by its old name `long` (deprecated): both at once must agree."""
    if long is None:
        return truncation
    _warn_long()
    if truncation is not None and truncation != long:
        raise BertsentError(f"truncation={truncation!r} and long={long!r}: long is truncation's old name; give one.")
    return long


def _warn_long() -> None:
    warnings.warn(
        "`long` is now `truncation` (the same values, as in training): pass truncation=...",
        DeprecationWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """The stack level of the first frame outside bertsent: a warning points at the user's line."""
    import sys
    import types

    package = str(Path(__file__).resolve().parents[1])
    frame: types.FrameType | None = sys._getframe(2)  # 1 is _warn_long's caller; counted as warnings.warn counts
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level
