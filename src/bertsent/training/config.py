"""Training settings: `TrainConfig` refuses bad values when it is built; `resolve` fills in the rest once.

A config as given may leave settings to its recipe (None), to the model (lr by size, the position limit)
or to the data (`max_length="auto"`, `batch_size="auto"`). `resolve` turns it, once, into a config whose
every value is concrete; the run reads only that one, nothing changes it, and bertsent.json records it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from bertsent.checks import Choice, Constraint, Number, Switch, Whole, flag
from bertsent.defaults import TRUNCATIONS
from bertsent.errors import BertsentError
from bertsent.modeling.hub import DEFAULT_MODEL

SMALL_MODEL_PARAMETERS = 40_000_000
IMBALANCED = 0.5  # smallest class / largest below this: the run suggests f1_macro and class weights
# --truncation windows: a long text gives at most this many training windows (spread over it), so a few very
# long texts do not outweigh the rest; validation and prediction still score every window.
DEFAULT_MAX_WINDOWS = 8

RECIPES = {
    # Our tuned default: little padding, long reviews cut head+tail, lr by model size.
    "fast": dict(epochs=2, batch_size=32, max_length="auto", truncation="head+tail", pad_to_max_length=False,
                 length_bucketing=True, packing=False, optimizer="adamw", weight_decay=0.01, warmup_ratio=0.1,
                 schedule="linear", max_grad_norm=1.0),
    # The tutorial: pad to 512, batch 6, plain Adam at 2e-5 (eps 1e-8), one epoch, no schedule.
    "tutorial": dict(epochs=1, batch_size=6, lr=2e-5, max_length=512, truncation="head", pad_to_max_length=True,
                     length_bucketing=False, packing=False, optimizer="adam", weight_decay=0.0, warmup_ratio=0.0,
                     schedule="constant", max_grad_norm=0.0),
}  # fmt: skip

# Defaults by device, over the recipe's: the one place to set what a recipe uses on a GPU. Filled from
# measurements only (bench/gpu_check.sh `sweep`: test accuracy at each batch size and lr, 3 seeds, whole-run
# time). Measured so far on an H200, one seed each (MiniLM, full IMDB, 3 epochs): batch 32 0.9300 / 53.0 s
# loop, batch 128 0.9305 / 28.5 s, batch 256 at lr 2e-4 0.9282 / 19.9 s; no 3-seed figures yet, so none set.
DEVICE_DEFAULTS: dict[str, dict[str, dict]] = {
    "cuda": {"fast": {}},  # e.g. {"fast": dict(batch_size=128)}; an "lr" here wins over the lr by model size
}
# torch.compile's modes (--compile alone: "default"). "reduce-overhead" adds CUDA graphs (CUDA only).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Each checked setting's rule, as scikit-learn's `_parameter_constraints` (bertsent.checks). None is always
# allowed: the recipe's value (or the model's, or the data's). The command line's flags read their metavar here.
CONSTRAINTS: dict[str, Constraint] = {
    "recipe": Choice(tuple(RECIPES), what="recipe"),
    "epochs": Whole(1),
    "batch_size": Whole(1, auto=True),
    "micro_batch_size": Whole(1, auto=True),
    "lr": Number(0, closed="neither"),
    "max_length": Whole(8, auto=True, unit="of tokens"),
    "truncation": Choice(TRUNCATIONS),
    "stride": Whole(1),
    "max_windows": Whole(1),
    "pad_to_max_length": Switch(),
    "length_bucketing": Switch(),
    "max_tokens": Whole(8),
    "grad_accum": Whole(1),
    "optimizer": Choice(("adamw", "adam")),
    "weight_decay": Number(0, closed="left"),
    "adam_eps": Number(0, closed="neither"),
    "warmup_ratio": Number(0, 1, closed="left"),
    "schedule": Choice(("linear", "constant")),
    "max_grad_norm": Number(0, closed="left"),
    "seed": Whole(0),
    "max_train_samples": Whole(1),
    "validation_fraction": Number(0, 1, closed="left"),
    "metric": Choice(("accuracy", "f1_macro", "loss")),
    "early_stopping": Whole(1),
    "eval_every": Whole(1),
    "checkpoint_every": Whole(1),
    "eval_batch_size": Whole(1),
    "precision": Choice(("auto", "fp32", "bf16", "fp16")),
    "packing": Switch(),
    "attention_dropout": Number(0, 1, closed="left"),
    "calibrate": Switch(),
}


def _setting(default, help: str, **command_line):
    """A field with its help text (and, where the constraint does not say it, its flag's metavar or nargs): the
    command line's flags are made from these (bertsent.cli.parser, as transformers' HfArgumentParser)."""
    return field(default=default, metadata={"help": help, **command_line})


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting. None means: the recipe's value (or the model's, or the data's)."""

    model: str = _setting(DEFAULT_MODEL, "alias (minilm, mpnet), local folder or Hub id (default minilm)", metavar="M")
    recipe: str = _setting(
        "fast", "default settings: fast (ours) or tutorial (pad to 512, batch 6, Adam 2e-5, 1 epoch)"
    )
    epochs: int | None = _setting(None, "passes over the training data")
    batch_size: int | str | None = _setting(
        None, "sequences per optimizer step and process (auto: the recipe's, in micro-batches that fit in memory)"
    )
    micro_batch_size: int | str | None = _setting(
        None, "sequences per forward+backward (default: the whole batch; auto: what fits in memory)"
    )
    lr: float | None = _setting(None, "peak learning rate (default: by model size)")
    max_length: int | str | None = _setting(None, "tokens per text (auto: 99th percentile of the training data)")
    truncation: str | None = _setting(
        None, "which part of a long text to keep (default head+tail), or windows: train on each window of it"
    )
    stride: int | None = _setting(None, "windows: tokens between window starts (default: a whole window)")
    max_windows: int | None = _setting(
        None, f"windows: training windows per text, at most, spread over it (default {DEFAULT_MAX_WINDOWS})"
    )
    pad_to_max_length: bool | None = _setting(None, "pad every text to --max-length (the tutorial recipe does)")
    length_bucketing: bool | None = _setting(None, "batch texts of similar length together, for less padding")
    max_tokens: int | None = _setting(None, "padded tokens per batch and process, at most")
    grad_accum: int = _setting(1, "batches per optimizer step")
    optimizer: str | None = _setting(None, "adamw (decoupled weight decay) or adam")
    weight_decay: float | None = _setting(None, "weight decay of the optimizer")
    adam_eps: float = _setting(1e-8, "the optimizer's epsilon")
    warmup_ratio: float | None = _setting(None, "share of the steps with a rising learning rate")
    schedule: str | None = _setting(None, "the learning rate after warm-up: linear (down to 0) or constant")
    max_grad_norm: float | None = _setting(None, "gradient clipping (0: none)")
    seed: int = _setting(42, "random seed")
    max_train_samples: int | None = _setting(None, "train on a random sample of N rows")
    validation_fraction: float = _setting(0.1, "share held out for validation when --eval-data is not given (0: none)")
    metric: str = _setting("accuracy", "validation metric that picks the best epoch")
    early_stopping: int | None = _setting(None, "stop after N evaluations without gain")
    eval_every: int | None = _setting(None, "also evaluate every N steps (default: each epoch)")
    checkpoint_every: int | None = _setting(None, "save a checkpoint every N steps (for --resume)")
    eval_batch_size: int = _setting(64, "sequences per batch when scoring the validation data")
    precision: str = _setting("auto", "auto: bf16 (or fp16) on GPUs, fp32 on CPU")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:1, mps", metavar="D")
    compile: bool | str = _setting(
        False,
        "torch.compile the model (lengths padded to a few bucket widths, so it compiles a few times); MODE: "
        "default, reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs",
        metavar="MODE",
        nargs="?",
    )
    packing: bool | None = _setting(
        None,
        "train on unpadded batches: sequences end to end, attention kept within each (BERT-architecture "
        "models; on CUDA with --attention-dropout 0 it uses the flash varlen kernel)",
    )
    attention_dropout: float | None = _setting(
        None,
        "dropout on attention probabilities (default: the model's, 0.1 for BERT); 0 trains long texts about "
        "1.5x faster on CPU",
    )
    calibrate: bool = _setting(True, "temperature scaling of the probabilities on the validation data")
    class_weights: str | tuple[float, ...] | None = _setting(
        None,
        "weigh each class in the loss: auto (balanced: n / (classes x count)), or one weight per class in the "
        "order the run lists them (default none)",
        metavar="auto|none|W1,W2,..",
    )

    def __post_init__(self):
        if not isinstance(self.model, str):
            object.__setattr__(self, "model", str(self.model))  # a Path to a model folder
        if not self.model.strip():
            raise BertsentError(f"{flag('model')}: give a model (minilm, mpnet, a folder or a Hub id).")
        for name, constraint in CONSTRAINTS.items():
            if getattr(self, name) is not None:  # None: the recipe's (or the model's, or the data's)
                object.__setattr__(self, name, constraint.check(name, getattr(self, name), parse=True))
        object.__setattr__(self, "compile", _compile_mode(self.compile))
        object.__setattr__(self, "class_weights", _class_weights(self.class_weights))
        _check_device(self.device)
        self._check_combinations()

    def _check_combinations(self) -> None:
        pads = (
            self.pad_to_max_length if self.pad_to_max_length is not None else RECIPES[self.recipe]["pad_to_max_length"]
        )
        if self.packing and pads:
            raise BertsentError(
                "--packing leaves out all padding, so it cannot also pad to the max length (the "
                "tutorial recipe pads). Drop --packing, or use --recipe fast."
            )
        for name in ("stride", "max_windows"):
            if getattr(self, name) is not None and self.truncation != "windows":
                raise BertsentError(
                    f"{flag(name)} {getattr(self, name)}: only with --truncation windows. Add it, or drop {flag(name)}."
                )
        batch, micro = self.batch_size, self.micro_batch_size
        if isinstance(batch, int) and isinstance(micro, int) and micro > batch:
            raise BertsentError(f"--micro-batch-size {micro}: must not exceed --batch-size {batch}.")

    def resolve(
        self,
        *,
        parameters: int,
        max_positions: int,
        token_lengths: list[int],
        packing_supported: bool,
        special_tokens: int = 2,
        device_type: str = "cpu",
    ) -> TrainConfig:
        """This config with every value concrete: the recipe's defaults (with the device's, DEVICE_DEFAULTS, over
        them), lr from the model's size, the
        max length from the training data's token lengths (`token_lengths`, before truncation); with windows,
        the stride (a window's `max_length - special_tokens` text tokens by default) and the cap per text."""
        defaults = RECIPES[self.recipe] | DEVICE_DEFAULTS.get(device_type, {}).get(self.recipe, {})
        values = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        batch_size = values.get("batch_size", self.batch_size)
        micro = self.micro_batch_size
        if batch_size == "auto":
            batch_size, micro = defaults["batch_size"], "auto"
        max_length = values.get("max_length", self.max_length)
        assert batch_size is not None and max_length is not None  # given, or the recipe's
        if max_length == "auto":
            max_length = auto_max_length(token_lengths, max_positions)
        elif max_length > max_positions:
            whose = "" if self.max_length else f" (the {self.recipe} recipe's)"
            raise BertsentError(
                f"--max-length {max_length}{whose}: the model takes at most {max_positions} tokens. "
                f"Give a smaller --max-length."
            )
        values.update(
            batch_size=batch_size,
            micro_batch_size=min(micro, batch_size) if isinstance(micro, int) else (micro or batch_size),
            lr=values.get("lr", self.lr) or auto_lr(parameters),
            max_length=max_length,
            packing=bool(values.get("packing", self.packing)) and packing_supported,
        )
        if self.truncation == "windows":
            values.update(
                stride=self._window_stride(max_length - special_tokens),
                max_windows=self.max_windows or DEFAULT_MAX_WINDOWS,
            )
        return replace(self, **values)

    def _window_stride(self, room: int) -> int:
        """The stride, within a window's `room` text tokens: a longer one would skip some of the text."""
        if room < 1:
            raise BertsentError("--truncation windows: --max-length leaves no room for text. Give a larger one.")
        if self.stride is None:
            return room
        if self.stride > room:
            raise BertsentError(
                f"--stride {self.stride}: must not exceed a window's {room} text tokens (--max-length less the "
                f"special tokens), or text between windows is skipped. Give a smaller --stride."
            )
        return self.stride

    def as_dict(self) -> dict:
        return asdict(self)


def auto_lr(parameter_count: int) -> float:
    # Small models (MiniLM) want a larger step than BERT-base-sized ones.
    return 1e-4 if parameter_count < SMALL_MODEL_PARAMETERS else 3e-5


def auto_max_length(lengths: list[int], limit: int) -> int:
    """The 99th percentile of training token lengths, rounded up to a multiple of 32, within the model's limit."""
    import numpy as np

    p99 = float(np.percentile(lengths, 99)) if len(lengths) else limit
    return int(min(limit, max(32, math.ceil(p99 / 32) * 32)))


def _compile_mode(value) -> bool | str:
    """False, or the torch.compile mode: True and "default" are the same; "true"/"false" from a command line."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if value is None or value is False:
        return False
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise BertsentError(f"--compile {value}: unknown mode. Use one of {', '.join(COMPILE_MODES)} (or no value).")
    return value


def _class_weights(value) -> str | tuple[float, ...] | None:
    """--class-weights as given: None, "auto", or a tuple of positive finite weights ("1,4" from the command line)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    if isinstance(value, str) and value.strip().lower() in ("auto", "balanced"):
        return "auto"
    usage = "Give auto, none, or one positive weight per class in the classes' order, e.g. 1,4."
    parts = value.split(",") if isinstance(value, str) else value
    shown = ",".join(map(str, parts)) if isinstance(parts, (list, tuple)) else value
    if not isinstance(parts, (list, tuple)) or not parts:
        raise BertsentError(f"--class-weights {shown}: not a weight list. {usage}")
    weights = []
    for part in parts:
        try:
            weight = float(part.strip() if isinstance(part, str) else part)
        except (TypeError, ValueError):
            raise BertsentError(f"--class-weights {shown}: {part!r} is not a number. {usage}") from None
        if isinstance(part, bool) or not math.isfinite(weight) or weight <= 0:
            raise BertsentError(f"--class-weights {shown}: {part!r} is not a positive number. {usage}")
        weights.append(weight)
    return tuple(weights)


def class_weights_for(setting, classes: list[str], labels: list[int]) -> tuple[float, ...] | None:
    """The weight of each class in `classes` order: scikit-learn's "balanced" ones (n / (classes x count)) for
    "auto", computed from `labels` (the training examples' class indices); an explicit list is checked."""
    if setting is None:
        return None
    if setting != "auto":
        check_class_weights(setting, classes)
        return tuple(float(w) for w in setting)
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)  # a class with no training example (a --max-train-samples draw) keeps weight 1
    balanced = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    weights = np.ones(len(classes))
    weights[present] = balanced
    return tuple(round(float(w), 6) for w in weights)


def check_class_weights(setting, classes: list[str]) -> None:
    """An explicit weight list must have one weight per class, in the order the run names the classes."""
    if isinstance(setting, tuple) and len(setting) != len(classes):
        raise BertsentError(
            f"--class-weights {','.join(f'{w:g}' for w in setting)}: {len(setting)} weight(s) for {len(classes)} "
            f"classes ({', '.join(classes)}). Give one weight per class in that order, or auto."
        )


def imbalance_note(counts: dict[str, int], config: TrainConfig) -> str | None:
    """A suggestion for the run's output when the smallest class has under half the examples of the largest."""
    if len(counts) < 2 or min(counts.values()) >= IMBALANCED * max(counts.values()):
        return None
    tips = []
    if config.metric == "accuracy":
        tips.append("--metric f1_macro (accuracy rewards predicting the majority class)")
    if config.class_weights is None:
        tips.append("--class-weights auto (the loss weighs each class equally)")
    if not tips:
        return None
    smallest, largest = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
    return (
        f"Note: the classes are imbalanced ({smallest} {counts[smallest]}, {largest} {counts[largest]}); "
        f"consider {' and '.join(tips)}."
    )


def _check_device(device: str) -> None:
    from bertsent.runtime import check_device

    if device != "auto":
        check_device(device)
