"""Why a model called a text what it did: word attributions by layer integrated gradients (Captum).

The attributions are taken on the embedding layer (`model.get_input_embeddings()`): the path runs from a
baseline text whose tokens are all the padding token (the special tokens kept) to the text itself, and the
model's output followed along it is the log-odds of the explained class, log(p / (1 - p)), which does not
saturate the way a probability does. Token scores (attributions summed over the embedding width) are added up
into the text's words, using the fast tokenizer's word ids and character offsets. A word's score is in log-odds
units: positive pushed towards the explained class, negative away from it; all scores together add up to the
log-odds gained from the baseline to the text, up to the convergence delta reported with them.

This works on a PyTorch model and its tokenizer, so that `SentimentModel.explain`, the report and the server
share it. Texts longer than `max_length` tokens are explained on their first `max_length` tokens.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from bertsent.checks import whole
from bertsent.errors import BertsentError
from bertsent.extras import require_extra
from bertsent.modeling.hub import model_max_length
from bertsent.modeling.tokenizer_file import transformers_tokenizer

if TYPE_CHECKING:  # imported where used: the command line reads the step defaults below without it
    import numpy as np

# Integration steps: 12 explain a 200-token review with a MiniLM-sized model in 1.3 s on one core of the 2-core
# Xeon these were measured on (16 steps: 1.7 s, 20: 2.0 s), with a convergence delta of 0.05 log-odds beside word
# scores summing to 6.5 in size (`python bench/serve_speed.py MODEL --servers '' --explain-steps 8 12 16 20`).
# The time goes as steps x tokens, so a shorter text gets more steps in the same time, up to MAX_AUTO_STEPS.
DEFAULT_STEPS = 12
STEPS_TOKENS = 200  # the length DEFAULT_STEPS is for
MAX_AUTO_STEPS = 48
SUPPORT, OPPOSE = (22, 128, 61), (205, 44, 44)  # shades of words that pushed towards / away from the class


@dataclass
class Explanation:
    """One text's word attributions for one class (`target`), with the model's verdict on the text."""

    text: str
    words: list[str]
    scores: list[float]  # per word, log-odds units; positive: towards `target`
    offsets: list[tuple[int, int] | None]  # each word's characters in `text` (None: not known)
    label: str  # the most probable class
    target: str  # the class explained
    probs: dict[str, float]  # class probabilities (with the temperature given)
    delta: float  # convergence delta: sum of all token attributions minus the log-odds gained
    tokens: int  # tokens explained (special tokens included)
    truncated: bool  # the text had more tokens than were explained
    n_steps: int  # integration steps taken

    def as_dict(self) -> dict:
        record = asdict(self)
        record["offsets"] = [list(o) if o is not None else None for o in self.offsets]
        return record

    def strongest(self, k: int = 5) -> list[tuple[str, float]]:
        """The k words with the largest scores by size, largest first."""
        order = sorted(range(len(self.words)), key=lambda i: -abs(self.scores[i]))[:k]
        return [(self.words[i], self.scores[i]) for i in order]


def import_captum():
    """Captum's LayerIntegratedGradients, or a BertsentError that says how to install it."""
    return require_extra("explain", "explain", "captum.attr").LayerIntegratedGradients


def explain(
    model,
    tokenizer,
    texts: list[str],
    target: str | list[str | None] | None = None,
    *,
    n_steps: int | None = None,
    max_length: int | None = None,
    temperature: float = 1.0,
    internal_batch_size: int | None = None,
) -> list[Explanation]:
    """Word attributions of each text, for the predicted class or `target` (one label for all texts, or
    one per text, None meaning the predicted one). `n_steps`: integration steps (default `auto_steps`: 12 for
    a text of 200 tokens or more, more for a shorter one, as long). `internal_batch_size` bounds the
    interpolated texts per forward pass (default: all the steps at once)."""
    import numpy as np
    import torch

    if isinstance(texts, str):
        raise BertsentError("explain takes a list of texts, not one string: explain([text]).")
    texts = ["" if t is None else str(t) for t in texts]
    if n_steps is not None:
        n_steps = whole("steps", n_steps, 1)
    layer_integrated_gradients = import_captum()
    tokenizer = transformers_tokenizer(tokenizer)  # offsets and word ids: an ONNX model's light one won't do
    network = getattr(model, "_orig_mod", model)  # a torch.compile'd model: its module
    classes = [network.config.id2label[i] for i in range(network.config.num_labels)]
    targets = _targets(target, len(texts), classes)
    limit = model_max_length(tokenizer, network.config)
    max_length = min(max_length or limit, limit)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    attribution = layer_integrated_gradients(_log_odds(network), network.get_input_embeddings())
    out = []
    try:
        for text, wanted in zip(texts, targets):
            ids, special, words = _encode(tokenizer, text, max_length)
            input_ids = torch.tensor([ids], device=device)
            mask = torch.ones_like(input_ids)
            with torch.no_grad():
                logits = network(input_ids=input_ids, attention_mask=mask).logits[0].float()
            probs = torch.softmax(logits / temperature, dim=-1).cpu().numpy()
            label = int(np.argmax(probs))
            index = label if wanted is None else wanted
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            baseline = torch.tensor([[i if s else pad for i, s in zip(ids, special)]], device=device)
            steps = n_steps or auto_steps(len(ids))
            with torch.enable_grad():
                attributions, delta = attribution.attribute(
                    inputs=input_ids,
                    baselines=baseline,
                    additional_forward_args=(mask,),
                    target=index,
                    n_steps=steps,
                    internal_batch_size=internal_batch_size or steps,
                    return_convergence_delta=True,
                )
            token_scores = attributions[0].sum(dim=-1).detach().float().cpu().numpy()
            merged, offsets, scores = _merge(text, words, token_scores)
            out.append(
                Explanation(
                    text=text,
                    words=merged,
                    scores=[float(s) for s in scores],
                    offsets=offsets,
                    label=classes[label],
                    target=classes[index],
                    probs={c: float(p) for c, p in zip(classes, probs)},
                    delta=float(delta.reshape(-1)[0]),
                    tokens=len(ids),
                    truncated=words.truncated,
                    n_steps=steps,
                )
            )
    finally:
        network.train(was_training)
    return out


def auto_steps(tokens: int) -> int:
    """Integration steps for a text of `tokens` tokens: DEFAULT_STEPS from STEPS_TOKENS tokens up, more for a
    shorter text (as many as take the same time), at most MAX_AUTO_STEPS."""
    return max(DEFAULT_STEPS, min(MAX_AUTO_STEPS, DEFAULT_STEPS * STEPS_TOKENS // max(1, tokens)))


def _targets(target, n: int, classes: list[str]) -> list[int | None]:
    """Class indices to explain, one per text (None: the predicted class)."""
    wanted = [target] * n if target is None or isinstance(target, str) else list(target)
    if len(wanted) != n:
        raise BertsentError(f"target: {len(wanted)} labels for {n} texts; give one label, or one per text.")
    out = []
    for name in wanted:
        if name is not None and name not in classes:
            raise BertsentError(f"--target {name}: the model's labels are {', '.join(classes)}.")
        out.append(None if name is None else classes.index(name))
    return out


def _log_odds(model):
    """The forward function Captum follows: each class's log-odds, log(p / (1 - p)), from the logits."""
    import torch

    def forward(input_ids, attention_mask):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        k = logits.shape[-1]
        if k == 1:  # a single-logit model: the logit is the log-odds of its class
            return logits
        others = logits.unsqueeze(1).expand(-1, k, -1)  # (batch, class, every class)
        eye = torch.eye(k, dtype=torch.bool, device=logits.device)
        others = others.masked_fill(eye, float("-inf"))
        return logits - torch.logsumexp(others, dim=-1)

    return forward


class _Words:
    """A text's tokens as the words they belong to: for each token, its word's index (None: special token),
    and each word's character span."""

    def __init__(self, owner: list[int | None], spans: Sequence[tuple[int, int] | None], pieces: list[str], truncated):
        self.owner = owner
        self.spans = spans
        self.pieces = pieces  # each word's text when no span is known (a slow tokenizer)
        self.truncated = truncated


def _encode(tokenizer, text: str, max_length: int):
    """Token ids (cut to max_length, special tokens kept), which are special, and the words they make."""
    if getattr(tokenizer, "is_fast", False):
        encoding = tokenizer(
            text,
            truncation=True,
            max_length=max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_overflowing_tokens=False,
        )
        full = len(tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])
        ids, special = encoding["input_ids"], encoding["special_tokens_mask"]
        owner: list[int | None] = []
        spans: list[tuple[int, int]] = []
        index: dict[int, int] = {}
        for word, (start, end), is_special in zip(encoding.word_ids(), encoding["offset_mapping"], special):
            if is_special or word is None:
                owner.append(None)
                continue
            if word not in index:
                index[word] = len(spans)
                spans.append((start, end))
            position = index[word]
            first, last = spans[position]
            spans[position] = (min(first, start), max(last, end))
            owner.append(position)
        owner, spans = _join_touching(owner, spans)
        pieces = [text[s:e] for s, e in spans]
        return ids, special, _Words(owner, spans, pieces, full > len(ids))
    # A slow tokenizer: WordPiece continuations ("##") join the word before them.
    encoding = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    full = len(tokenizer(text, truncation=False)["input_ids"])
    ids, special = encoding["input_ids"], encoding["special_tokens_mask"]
    owner, pieces = [], []
    for token, is_special in zip(tokenizer.convert_ids_to_tokens(ids), special):
        if is_special:
            owner.append(None)
        elif token.startswith("##") and pieces:
            pieces[-1] += token[2:]
            owner.append(len(pieces) - 1)
        else:
            pieces.append(token.lstrip("▁Ġ"))
            owner.append(len(pieces) - 1)
    return ids, special, _Words(owner, [None] * len(pieces), pieces, full > len(ids))


def _join_touching(owner: list[int | None], spans: list[tuple[int, int]]):
    """Words with nothing between them joined, so that a word is what whitespace delimits ("don't!", not
    "don", "'", "t", "!")."""
    joined: list[tuple[int, int]] = []
    into: list[int] = []
    for start, end in spans:
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], end))
        else:
            joined.append((start, end))
        into.append(len(joined) - 1)
    return [None if o is None else into[o] for o in owner], joined


def _merge(text: str, words: _Words, token_scores: np.ndarray):
    """Token scores added up per word: the words, their spans and scores, in text order."""
    import numpy as np

    scores = np.zeros(len(words.pieces), dtype=np.float64)
    for position, score in zip(words.owner, token_scores):
        if position is not None:
            scores[position] += float(score)
    return list(words.pieces), list(words.spans), scores


# -- shading -------------------------------------------------------------------------------------


def shade(score: float, largest: float) -> str:
    """A word's background: green towards the explained class, red away from it, stronger for larger
    scores (relative to the text's largest)."""
    if largest <= 0 or not math.isfinite(score):
        return "transparent"
    alpha = min(1.0, abs(score) / largest) * 0.75
    red, green, blue = SUPPORT if score > 0 else OPPOSE
    return f"rgba({red},{green},{blue},{alpha:.3f})"


def shaded_html(explanation: Explanation) -> str:
    """The text as HTML, each word on its shade (the score in its title); the text between words kept."""
    e = html.escape
    largest = max((abs(s) for s in explanation.scores), default=0.0)
    pieces, cursor = [], 0
    text = explanation.text
    for word, score, span in zip(explanation.words, explanation.scores, explanation.offsets):
        if span is not None:
            start, end = span
            pieces.append(e(text[cursor:start]))
            cursor = end
        elif pieces:
            pieces.append(" ")
        pieces.append(
            f"<span class='w' style='background:{shade(score, largest)}' title='{score:+.3f}'>{e(word)}</span>"
        )
    if not explanation.words or explanation.offsets[-1] is not None:
        pieces.append(e(text[cursor:]))  # after the last word (of a long text: the part not explained)
    return "".join(pieces)


PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;
color:#1d2330}main{max-width:960px;margin:0 auto;padding:24px 28px 48px}h1{font-size:1.5em;margin:0 0 6px}
.note{color:#5b6472;font-size:.88em}article{background:#fff;border:1px solid #dde1e7;border-radius:8px;
padding:10px 18px 14px;margin-top:16px}.head{font-weight:600;margin-bottom:8px}.text{line-height:1.9}
.w{border-radius:3px;padding:1px 2px}.legend span{padding:1px 6px;border-radius:3px;margin-right:8px}
"""


def explanation_html(explanation: Explanation) -> str:
    """One text's verdict and shaded words, as an <article> (the report and `--html` pages use it)."""
    e = html.escape
    probability = explanation.probs.get(explanation.label, 0.0)
    aim = "" if explanation.target == explanation.label else f"; words shaded for {e(explanation.target)}"
    cut = f"; explained on its first {explanation.tokens} tokens" if explanation.truncated else ""
    return (
        f"<article><div class='head'>{e(explanation.label)} ({probability:.3f}){aim}{cut}</div>"
        f"<div class='text'>{shaded_html(explanation)}</div></article>"
    )


def legend_html(target: str = "the class explained") -> str:
    return (
        f"<p class='legend note'><span style='background:rgba{(*SUPPORT, 0.6)}'>towards {html.escape(target)}</span>"
        f"<span style='background:rgba{(*OPPOSE, 0.6)}'>away from it</span> shade: the word's share of the "
        "text's largest attribution (layer integrated gradients)</p>"
    )


def explanations_page(explanations: list[Explanation], title: str = "bertsent explanations") -> str:
    """A self-contained HTML page of shaded texts (inline CSS, no scripts, no links)."""
    e = html.escape
    body = "".join(explanation_html(x) for x in explanations)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{PAGE_CSS}</style></head>"
        f"<body><main><h1>{e(title)}</h1>{legend_html()}{body}</main></body></html>"
    )
