"""TextDataset: texts with optional labels and groups, as every reader returns them; the order of label names."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

# Sentiment names sort in their natural order (negative < neutral < positive), not alphabetically.
SENTIMENT_ORDER = {"negative": 0, "neg": 0, "neutral": 1, "positive": 2, "pos": 2}


@dataclass
class TextDataset:
    """Texts with optional labels (as strings) and optional groups (e.g. the movie of a review)."""

    texts: list[str]
    labels: list[str] | None = None
    groups: list[str] | None = None
    name: str = ""
    dropped: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices, name: str | None = None) -> TextDataset:
        indices = list(indices)
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return TextDataset(
            [self.texts[i] for i in indices],
            pick(self.labels),
            pick(self.groups),
            name or self.name,
            0,
            dict(self.meta),
        )

    def label_counts(self) -> dict[str, int]:
        counts = Counter(self.labels or [])
        return {name: counts[name] for name in ordered_label_names(counts)}

    def fingerprint(self) -> str:
        """A short hash of texts and labels: tells whether two runs saw the same data."""
        digest = hashlib.sha256()
        for i, text in enumerate(self.texts):
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00" + (self.labels[i].encode() if self.labels else b"") + b"\x01")
        return digest.hexdigest()[:16]


def ordered_label_names(labels) -> list[str]:
    """Distinct labels in a stable, natural order: integers numerically, sentiment words by polarity."""
    names = sorted(set(labels))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=Decimal)  # not int: no limit on the digits
    if all(n.lower() in SENTIMENT_ORDER for n in names):
        return sorted(names, key=lambda n: SENTIMENT_ORDER[n.lower()])
    return names
