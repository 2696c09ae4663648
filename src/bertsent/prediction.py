"""Predictions from a trained model folder: `bertsent.load(DIR).predict(texts)`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from . import model as models
from .batching import Collator
from .errors import BertsentError
from .files import partial_folder, publish_folder
from .inference import predict_logits
from .metrics import check_neutral_band, labels_from_proba, softmax
from .runtime import pick_device


class SentimentModel:
    """A trained classifier with scikit-learn's shape: predict, predict_proba, classes_."""

    def __init__(
        self,
        model,
        tokenizer,
        metadata: dict | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_length: int | None = None,
        neutral_band: float | None = None,
    ):
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
        check_neutral_band(neutral_band)
        self.neutral_band = neutral_band
        self.collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side)

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs) -> SentimentModel:
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
        """Labels for probabilities: the most probable class, or "neutral" within the neutral band."""
        return labels_from_proba(probs, self.classes_, self.neutral_band)

    def predict_records(self, texts) -> list[dict]:
        """[{"text", "label", "probs": {label: p}}] for each text."""
        texts = self._texts(texts)
        probs = self.predict_proba(texts)
        labels = self.labels_from_proba(probs)
        return [
            {"text": t, "label": label, "probs": {c: round(float(p), 6) for c, p in zip(self.classes_, row)}}
            for t, label, row in zip(texts, labels, probs)
        ]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model folder (weights, tokenizer, bertsent.json); an existing folder is replaced whole."""
        import json

        out = Path(folder).expanduser()
        work = partial_folder(out)
        shutil.rmtree(work, ignore_errors=True)
        self.model.save_pretrained(work, safe_serialization=True)
        self.tokenizer.save_pretrained(work)
        (work / models.METADATA_FILE).write_text(json.dumps(self.metadata, indent=2))
        publish_folder(work, out)
        return out


def load(folder: str | os.PathLike, **kwargs) -> SentimentModel:
    """Load a model folder written by `bertsent train` (or any HF sequence-classification folder)."""
    return SentimentModel.load(folder, **kwargs)
