"""A model folder's tokenizer.json run by the `tokenizers` library alone: what prediction with an ONNX backend
tokenizes with, so that it imports neither transformers (a second) nor torch (transformers' tokenizers import it
when loaded). It answers the few calls prediction makes (`tokens.tokenize`, the padding id and side, the length
limit, the special tokens' count); explaining and saving take the transformers tokenizer (`transformers_tokenizer`).

The same ids as transformers' fast tokenizer: transformers saves the tokenizer it runs as tokenizer.json, and its
fast tokenizer calls this same Rust code (tests/test_onnx_lite.py compares the two).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"


class TokenizerFile:
    """tokenizer.json and the settings transformers keeps beside it (tokenizer_config.json): padding token and
    side, length limit. Called as `tokens.tokenize` calls a transformers tokenizer."""

    is_fast = True

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self._transformers = None
        self._tokenizer = Tokenizer.from_file(str(self.folder / TOKENIZER_JSON))
        # transformers turns off what tokenizer.json may have saved on: prediction cuts and pads by itself
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        settings = _settings(self.folder)
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
    """Whether `TokenizerFile` can run this folder's tokenizer as transformers would: a tokenizer.json, and no
    tokenizer class of the model's own code (auto_map)."""
    folder = Path(folder)
    if not (folder / TOKENIZER_JSON).is_file():
        return False
    try:
        config = json.loads((folder / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False  # transformers says what is wrong with it
    return isinstance(config, dict) and "auto_map" not in config


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
    for key in ("pad_token", "eos_token", "unk_token"):
        value = settings.get(key)
        if isinstance(value, dict):  # a saved AddedToken
            value = value.get("content")
        settings[key] = value if isinstance(value, str) else None
    return settings
