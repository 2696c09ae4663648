"""Predictions from a trained model folder: `bertsent.load(DIR).predict(texts)`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import model as models
from .batching import Collator, EncodedDataset, LengthBucketBatchSampler
from .errors import BertsentError

NEUTRAL = "neutral"


def pick_device(device: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU; or what the user asked for."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@torch.inference_mode()
def predict_logits(model, ids: list[list[int]], collator: Collator, batch_size: int = 64,
                   max_tokens: int | None = None, device: torch.device | None = None,
                   autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits for token-id lists, in their order. Batches are length-sorted so little is padded."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    sampler = LengthBucketBatchSampler([len(x) for x in ids], batch_size, max_tokens, shuffle=False)
    dataset = EncodedDataset(ids)
    order, parts = [], []
    for batch_indices in sampler:
        batch = collator([dataset[i] for i in batch_indices])
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            parts.append(model(**batch).logits.float())  # left on the device: copying each batch back would wait
        order += batch_indices
    model.train(was_training)
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    if parts:
        out[order] = torch.cat(parts).cpu().numpy()
    return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class SentimentModel:
    """A trained classifier with scikit-learn's shape: predict, predict_proba, classes_."""

    def __init__(self, model, tokenizer, metadata: dict | None = None, device: str | None = None,
                 batch_size: int = 64, max_length: int | None = None, neutral_band: float | None = None):
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.metadata = metadata or {}
        self.batch_size = batch_size
        config = model.config
        self.classes_ = [config.id2label[i] for i in range(config.num_labels)]
        self.max_length = max_length or models.model_max_length(tokenizer, model)
        self.truncation = self.metadata.get("truncation", "head+tail")
        self.temperature = float(self.metadata.get("temperature", 1.0))
        self.neutral_band = neutral_band
        self.collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side)

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs) -> "SentimentModel":
        folder = Path(folder).expanduser()
        models.check_model_folder(folder, need_classifier=True)
        metadata = models.read_metadata(folder)
        tokenizer = models.load_tokenizer(folder)
        model = models.load_classifier(folder)
        models.set_padding_token(model, tokenizer)
        return cls(model, tokenizer, metadata, **kwargs)

    def _texts(self, texts) -> list[str]:
        if isinstance(texts, str):
            raise BertsentError("predict takes a list of texts, not one string: predict([text]).")
        texts = ["" if t is None else str(t) for t in texts]
        return texts

    def decision_function(self, texts, return_lengths: bool = False):
        """Raw logits, one row per text; with return_lengths, also each text's length in tokens
        before truncation."""
        texts = self._texts(texts)
        if not texts:  # the tokenizer fails on an empty batch
            empty = np.zeros((0, len(self.classes_)), dtype=np.float32)
            return (empty, []) if return_lengths else empty
        ids, lengths = models.encode(self.tokenizer, texts, self.max_length, self.truncation, return_lengths=True)
        logits = predict_logits(self.model, ids, self.collator, self.batch_size, device=self.device)
        return (logits, lengths) if return_lengths else logits

    def predict_proba(self, texts) -> np.ndarray:
        """Calibrated class probabilities (temperature-scaled softmax), columns in `classes_` order."""
        return softmax(self.decision_function(texts), self.temperature)

    def predict(self, texts) -> list[str]:
        return self.labels_from_proba(self.predict_proba(texts))

    def labels_from_proba(self, probs: np.ndarray) -> list[str]:
        labels = [self.classes_[i] for i in probs.argmax(axis=1)]
        if self.neutral_band and len(self.classes_) == 2:
            # Binary models cannot learn "neutral"; an uncertain prediction is reported as one.
            threshold = 0.5 + self.neutral_band / 2
            labels = [NEUTRAL if p.max() < threshold else label for p, label in zip(probs, labels)]
        return labels

    def predict_records(self, texts) -> list[dict]:
        """[{"text", "label", "probs": {label: p}}] for each text."""
        texts = self._texts(texts)
        probs = self.predict_proba(texts)
        labels = self.labels_from_proba(probs)
        return [{"text": t, "label": label, "probs": {c: round(float(p), 6) for c, p in zip(self.classes_, row)}}
                for t, label, row in zip(texts, labels, probs)]


def load(folder: str | os.PathLike, **kwargs) -> SentimentModel:
    """Load a model folder written by `bertsent train` (or any HF sequence-classification folder)."""
    return SentimentModel.load(folder, **kwargs)
