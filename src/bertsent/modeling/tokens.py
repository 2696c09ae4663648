"""Texts into model inputs: tokenizing, and the one place that decides how a text longer than the model's
length is cut (`model_inputs`): keep its head, its tail, both, or every window. Training, its validation,
prediction and the server's token budget all call `model_inputs`, so a text is cut the same way everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bertsent.defaults import TRUNCATIONS
from bertsent.errors import DataError

if TYPE_CHECKING:  # imported where used: the command line reads this module's names without them
    import numpy as np

HEAD_TAIL_HEAD = 128  # Sun et al. 2019: the first 128 and last 382 tokens of 512 work best
CUTS = tuple(t for t in TRUNCATIONS if t != "windows")  # one input per text: what `truncate` takes


def encode(tokenizer, texts: list[str], max_length: int, truncation: str = "head", return_lengths: bool = False):
    """Token ids with special tokens, cut to max_length by keeping the head, the tail or both.

    Tokenizes without truncation first, so the tail and the true lengths are known; with
    return_lengths, also returns each text's full length in tokens.
    """
    tokens = tokenize(tokenizer, texts)
    out = truncate(tokens, max_length, truncation)
    return (out, [len(ids) for ids, _ in tokens]) if return_lengths else out


# Characters of one text that are tokenized, at most: about 250,000 tokens, far beyond any window budget. A
# longer text (a 50 MB field) keeps its head and tail halves, so tokenizing it costs seconds and megabytes,
# not minutes and gigabytes; truncation and `windows` never reach its middle anyway in practice.
MAX_TEXT_CHARS = 1 << 20


def clip_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} {text[-half:]}"


def tokenize(tokenizer, texts: list[str]) -> list[tuple[list[int], list[int]]]:
    """Each text's full token ids with special tokens, and which of them are special: `truncate`'s input
    (texts over MAX_TEXT_CHARS characters: their head and tail)."""
    try:
        batch = tokenizer(
            [clip_text(t) if isinstance(t, str) else t for t in texts],
            add_special_tokens=True,
            truncation=False,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
    except TypeError:  # the Rust tokenizer's answer to a string with lone surrogates (undecodable bytes)
        bad = next((i for i, t in enumerate(texts) if not _is_utf8(t)), None)
        if bad is None:
            raise
        raise DataError(
            f"text {bad + 1} is not valid Unicode (it holds undecodable bytes). Read the data with the right "
            f"--encoding, or clean that text."
        ) from None
    return list(zip(batch["input_ids"], batch["special_tokens_mask"]))


def _is_utf8(text) -> bool:
    try:
        text.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        return False
    return True


def truncate(tokens: list[tuple[list[int], list[int]]], max_length: int, truncation: str = "head") -> list[list[int]]:
    """`tokenize`'s output cut to max_length, keeping the special tokens at both ends.

    Separate from tokenizing so that one tokenization serves any length (`--max-length auto`)."""
    if truncation not in CUTS:
        raise ValueError(f"truncation must be one of {CUTS}, not {truncation!r}")
    out = []
    for ids, special in tokens:
        if len(ids) <= max_length:
            out.append(ids)
            continue
        start, end = _body_span(special)
        prefix, body, suffix = ids[:start], ids[start:end], ids[end:]
        room = max_length - len(prefix) - len(suffix)
        if truncation == "head":
            body = body[:room]
        elif truncation == "tail":
            body = body[len(body) - room :]
        else:
            head = min(HEAD_TAIL_HEAD * max_length // 512, room)
            body = body[:head] + body[len(body) - (room - head) :] if room > head else body[:room]
        out.append(prefix + body + suffix)
    return out


def windows(
    tokens: list[tuple[list[int], list[int]]], max_length: int, stride: int
) -> tuple[list[list[int]], list[int]]:
    """`tokenize`'s output cut into overlapping windows of at most max_length tokens, each with the special
    tokens at both ends; window starts `stride` tokens apart, the last one flush with the text's end, so every
    token is in some window. Returns the windows and, for each, the index of the text it came from."""
    out, owner = [], []
    for index, (ids, special) in enumerate(tokens):
        if len(ids) <= max_length:
            out.append(ids)
            owner.append(index)
            continue
        start, end = _body_span(special)
        prefix, body, suffix = ids[:start], ids[start:end], ids[end:]
        room = max_length - len(prefix) - len(suffix)
        last = len(body) - room
        starts = list(range(0, last, stride)) + [last]
        out += [prefix + body[s : s + room] + suffix for s in starts]
        owner += [index] * len(starts)
    return out, owner


def model_inputs(
    tokens: list[tuple[list[int], list[int]]],
    truncation: str,
    max_length: int,
    stride: int | None = None,
    max_windows: int | None = None,
) -> tuple[list[list[int]], list[int] | None]:
    """`tokenize`'s output as the model's inputs: the one place that decides how a long text is cut.

    `truncation` is one of TRUNCATIONS: head, tail or head+tail give one input per text, cut to max_length
    (`truncate`), and owner None; windows gives every window of a text (`windows`, `stride` tokens apart) and,
    for each input, the index of the text it came from, whose logits `mean_by_owner` averages. `max_windows`
    (training) keeps at most that many windows of a text, spread evenly over it, first and last included."""
    if truncation != "windows":
        return truncate(tokens, max_length, truncation), None
    if stride is None:
        raise ValueError("truncation 'windows' needs a stride")
    ids, owner = windows(tokens, max_length, stride)
    if max_windows is None or len(ids) <= max_windows:
        return ids, owner
    import numpy as np

    keep, first = [], 0
    for count in np.bincount(owner, minlength=len(tokens)):  # a text's windows are consecutive in `ids`
        picked = np.arange(count)
        if count > max_windows:
            picked = np.unique(np.linspace(0, count - 1, max_windows).round().astype(int))
        keep += (first + picked).tolist()
        first += count
    return [ids[i] for i in keep], [owner[i] for i in keep]


def mean_by_owner(logits: np.ndarray, owner: list[int], n: int) -> np.ndarray:
    """Each of `n` texts' logits: the mean of its windows' rows (`windows`' owner list says whose each is)."""
    import numpy as np

    sums = np.zeros((n, logits.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, logits)
    counts = np.bincount(owner, minlength=n)[:, None]
    return (sums / counts).astype(np.float32)


def _body_span(special: list[int]) -> tuple[int, int]:
    """Where the text's own tokens are: between the special tokens at either end."""
    start = 0
    while start < len(special) and special[start]:
        start += 1
    end = len(special)
    while end > start and special[end - 1]:
        end -= 1
    return start, end
