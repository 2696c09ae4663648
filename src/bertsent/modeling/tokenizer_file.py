"""A model folder's tokenizer.json run by the `tokenizers` library alone: what prediction with an ONNX backend
tokenizes with, so that it imports neither transformers (a second) nor torch (transformers' tokenizers import it
when loaded). It answers the few calls prediction makes (`tokens.tokenize`, the padding id and side, the length
limit, the special tokens' count); explaining and saving take the transformers tokenizer (`transformers_tokenizer`).

The same ids as transformers' fast tokenizer, which calls this same Rust code (tests/test_onnx_lite.py compares the
two). Where tokenizer_config.json and tokenizer.json disagree, transformers' tokenizer class decides: BERT's (and
DistilBERT's), MPNet's and RoBERTa's build their normalizer, pre-tokenizer, model options and special-token template
from tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars, add_prefix_space, the special
tokens) and take only the vocabulary (and merges) from tokenizer.json, so `TokenizerFile` builds them the same way
(`TRANSFORMERS_BUILDS`); a generic fast tokenizer (PreTrainedTokenizerFast) runs tokenizer.json as it is. Any other
class is loaded by transformers (`readable` says no). Tokens that tokenizer_config.json adds (added_tokens_decoder)
are added as transformers adds them; one listed with an id it would not get is refused (use the torch backend).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bertsent.errors import BertsentError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
MODEL_CONFIG = "config.json"
GENERIC = ("PreTrainedTokenizerFast", "TokenizersBackend")  # tokenizer.json as it is
# The classes that rebuild the pipeline from tokenizer_config.json: (model, post-processor, default special tokens).
TRANSFORMERS_BUILDS = {
    "BertTokenizer": ("WordPiece", "template", {"unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]"}),
    "DistilBertTokenizer": ("WordPiece", "template", {"unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]"}),
    "MPNetTokenizer": ("WordPiece", "roberta", {"unk": "[UNK]", "cls": "<s>", "sep": "</s>"}),
    "RobertaTokenizer": ("BPE", "roberta", {"unk": "<unk>", "cls": "<s>", "sep": "</s>"}),
}
# The class transformers picks by config.json's model_type when tokenizer_config.json names none.
BY_MODEL_TYPE = {
    "bert": "BertTokenizer",
    "distilbert": "BertTokenizer",
    "mpnet": "MPNetTokenizer",
    "roberta": "RobertaTokenizer",
}


class TokenizerFile:
    """tokenizer.json and the settings transformers keeps beside it (tokenizer_config.json): padding token and
    side, length limit. Called as `tokens.tokenize` calls a transformers tokenizer."""

    is_fast = True

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self._transformers = None
        text = (self.folder / TOKENIZER_JSON).read_text(encoding="utf-8")
        self._tokenizer = Tokenizer.from_str(text)
        # transformers turns off what tokenizer.json may have saved on: prediction cuts and pads by itself
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        settings = _settings(self.folder)
        kind = tokenizer_class(self.folder, settings)
        if kind in TRANSFORMERS_BUILDS:
            _build_as_transformers(self._tokenizer, kind, json.loads(text)["model"], settings)
        _add_listed_tokens(self._tokenizer, settings)
        if kind in TRANSFORMERS_BUILDS:
            _special_template(self._tokenizer, kind, settings)
        # as hub.load_tokenizer: a GPT-style tokenizer without a padding token pads with end-of-text
        self.pad_token = next((t for t in map(settings.get, ("pad_token", "eos_token", "unk_token")) if t), None)
        self.pad_token_id = self._tokenizer.token_to_id(self.pad_token) if self.pad_token else None
        self.padding_side = settings.get("padding_side") or "right"
        limit = settings.get("model_max_length")
        self.model_max_length = limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def __call__(
        self,
        texts: list[str],
        *,
        add_special_tokens: bool = True,
        truncation: bool = False,
        return_special_tokens_mask: bool = False,
        return_attention_mask: bool = False,
        return_token_type_ids: bool = False,
    ) -> dict[str, list[list[int]]]:
        if truncation or return_attention_mask or return_token_type_ids:
            raise NotImplementedError("TokenizerFile only tokenizes whole texts into ids (and the special-token mask)")
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        out = {"input_ids": [e.ids for e in encodings]}
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        return out

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._tokenizer.num_special_tokens_to_add(pair)

    def transformers(self):
        """The same folder's tokenizer loaded by transformers (imports torch); loaded once."""
        if self._transformers is None:
            from bertsent.modeling.hub import load_tokenizer

            self._transformers = load_tokenizer(self.folder)
        return self._transformers


def transformers_tokenizer(tokenizer):
    """The transformers tokenizer for `tokenizer`: itself, or a TokenizerFile's folder loaded by transformers (word
    attributions need its offsets and word ids; saving, its files)."""
    return tokenizer.transformers() if isinstance(tokenizer, TokenizerFile) else tokenizer


def readable(folder: str | Path) -> bool:
    """Whether `TokenizerFile` can run this folder's tokenizer as transformers would: a tokenizer.json, no
    tokenizer class of the model's own code (auto_map), and a class it builds as transformers does."""
    folder = Path(folder)
    if not (folder / TOKENIZER_JSON).is_file():
        return False
    try:
        config = json.loads((folder / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError):
        return False  # transformers says what is wrong with it
    if not isinstance(config, dict) or "auto_map" in config:
        return False
    return tokenizer_class(folder, config) in (*GENERIC, *TRANSFORMERS_BUILDS)


def tokenizer_class(folder: Path, settings: dict[str, Any]) -> str | None:
    """The tokenizer class transformers loads the folder with: tokenizer_config.json's (a v4 "...Fast" name is the
    same class), else the one for config.json's model_type (None: unknown here)."""
    named = settings.get("tokenizer_class")
    if isinstance(named, str):
        return named if named in GENERIC else named.removesuffix("Fast")
    try:
        model_type = json.loads((folder / MODEL_CONFIG).read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return BY_MODEL_TYPE.get(model_type)


def _build_as_transformers(tokenizer, kind: str, model: dict[str, Any], settings: dict[str, Any]) -> None:
    """The normalizer, pre-tokenizer and model options transformers' `kind` builds from tokenizer_config.json,
    around tokenizer.json's vocabulary (and merges)."""
    from tokenizers import models, normalizers, pre_tokenizers

    family, _, defaults = TRANSFORMERS_BUILDS[kind]
    if family == "WordPiece":
        vocab = model["vocab"]
        tokenizer.model = models.WordPiece(vocab, unk_token=settings.get("unk_token") or defaults["unk"])
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
            strip_accents=settings.get("strip_accents"),
            lowercase=settings.get("do_lower_case", True),
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return
    pairs = (m.split(" ") if isinstance(m, str) else m for m in model["merges"])  # "a b" or ["a", "b"]
    merges = [(first, second) for first, second in pairs]
    tokenizer.model = models.BPE(
        model["vocab"], merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False
    )
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=settings.get("add_prefix_space", False))


def _special_template(tokenizer, kind: str, settings: dict[str, Any]) -> None:
    """The special tokens around a text, as `kind` sets them: [CLS] A [SEP] (BERT), <s> A </s> (RoBERTa, MPNet)."""
    from tokenizers import processors

    _, template, defaults = TRANSFORMERS_BUILDS[kind]
    cls, sep = settings.get("cls_token") or defaults["cls"], settings.get("sep_token") or defaults["sep"]
    if template == "template":
        cls_id, sep_id = _id_or(tokenizer, cls, 2), _id_or(tokenizer, sep, 3)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )
        return
    trim = settings.get("trim_offsets", True) if kind == "RobertaTokenizer" else True
    prefix = settings.get("add_prefix_space", False) if kind == "RobertaTokenizer" else False
    tokenizer.post_processor = processors.RobertaProcessing(
        (sep, _id_or(tokenizer, sep, 2)), (cls, _id_or(tokenizer, cls, 0)), trim, prefix
    )


def _id_or(tokenizer, token: str, default: int) -> int:
    found = tokenizer.token_to_id(token)
    return default if found is None else found


def _add_listed_tokens(tokenizer, settings: dict[str, Any]) -> None:
    """The tokens tokenizer_config.json lists (added_tokens_decoder) that tokenizer.json lacks, added as
    transformers adds them; one that would get another id than listed cannot be run the same way."""
    from tokenizers import AddedToken

    listed = settings.get("added_tokens_decoder")
    if not isinstance(listed, dict):
        return
    numbered = [(int(key), token) for key, token in listed.items() if str(key).isdigit()]
    for number, token in sorted(numbered, key=lambda item: item[0]):
        content = token.get("content") if isinstance(token, dict) else None
        if not isinstance(content, str) or tokenizer.token_to_id(content) == number:
            continue
        if tokenizer.token_to_id(content) is not None or number != tokenizer.get_vocab_size(with_added_tokens=True):
            raise BertsentError(
                f"{TOKENIZER_CONFIG} gives token {content!r} the id {number}, which {TOKENIZER_JSON} does not: the "
                f"tokenizer cannot be run without transformers. Use --backend torch (backend='torch' in Python)."
            )
        options = {k: bool(token.get(k, False)) for k in ("single_word", "lstrip", "rstrip", "normalized")}
        added = AddedToken(content, special=bool(token.get("special", False)), **options)
        if added.special:
            tokenizer.add_special_tokens([added])
        else:
            tokenizer.add_tokens([added])


def _settings(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json's settings over special_tokens_map.json's, special tokens as their text."""
    settings: dict[str, Any] = {}
    for name in (SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG):
        try:
            found = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            settings.update(found)
    for key in ("pad_token", "eos_token", "unk_token", "cls_token", "sep_token"):
        value = settings.get(key)
        if isinstance(value, dict):  # a saved AddedToken
            value = value.get("content")
        settings[key] = value if isinstance(value, str) else None
    return settings
