"""TrainConfig: every bad value refused when it is built (from Python and the command line alike), and
resolved once into concrete settings (the command line's one-line refusals: rows of test_cli's
test_the_command_line_refuses_in_one_line)."""

from __future__ import annotations

import dataclasses

import pytest

import bertsent
from bertsent.checks import flag
from bertsent.cli.parser import build_parser, flag_options, training_settings
from bertsent.data.sources import TextDataset
from bertsent.training import TrainConfig

from conftest import make_reviews

FACTS = dict(parameters=22_000_000, max_positions=512, token_lengths=list(range(10, 110)), packing_supported=True)

BAD_VALUES = [
    (dict(epochs=0), "--epochs 0: must be at least 1."),
    (dict(epochs=2.5), "--epochs 2.5: give a whole number."),
    (dict(batch_size=0), "--batch-size 0: must be at least 1."),
    (dict(batch_size="big"), "--batch-size big: give a whole number or 'auto'."),
    (dict(micro_batch_size=0), "--micro-batch-size 0: must be at least 1."),
    (dict(batch_size=8, micro_batch_size=16), "--micro-batch-size 16: must not exceed --batch-size 8."),
    (dict(grad_accum=0), "--grad-accum 0: must be at least 1."),
    (dict(grad_accum=True), "--grad-accum True: give a whole number."),
    (dict(lr=0), "--lr 0: must be above 0."),
    (dict(lr=-1e-3), "--lr -0.001: must be above 0."),
    (dict(lr=float("nan")), "--lr nan: must be above 0."),
    (dict(lr="fast"), "--lr fast: give a number."),
    (dict(max_length=4), "--max-length 4: must be at least 8."),
    (dict(max_length="long"), "--max-length long: give a whole number of tokens or 'auto'."),
    (dict(max_tokens=0), "--max-tokens 0: must be at least 8."),
    (dict(validation_fraction=1.0), "--validation-fraction 1.0: must be in [0, 1)."),
    (dict(validation_fraction=-0.1), "--validation-fraction -0.1: must be in [0, 1)."),
    (dict(warmup_ratio=1.5), "--warmup-ratio 1.5: must be in [0, 1)."),
    (dict(attention_dropout=1), "--attention-dropout 1: must be in [0, 1)."),
    (dict(weight_decay=-0.01), "--weight-decay -0.01: must be 0 or more."),
    (dict(max_grad_norm=-1), "--max-grad-norm -1: must be 0 or more."),
    (dict(adam_eps=0), "--adam-eps 0: must be above 0."),
    (dict(seed=-1), "--seed -1: must be at least 0."),
    (dict(max_train_samples=0), "--max-train-samples 0: must be at least 1."),
    (dict(early_stopping=0), "--early-stopping 0: must be at least 1."),
    (dict(eval_every=0), "--eval-every 0: must be at least 1."),
    (dict(checkpoint_every=0), "--checkpoint-every 0: must be at least 1."),
    (dict(eval_batch_size=0), "--eval-batch-size 0: must be at least 1."),
    (dict(recipe="slow"), "--recipe slow: unknown recipe. Use one of fast, tutorial."),
    (dict(truncation="middle"), "--truncation middle: unknown value. Use one of head, tail, head+tail, windows."),
    (dict(optimizer="sgd"), "--optimizer sgd: unknown value. Use one of adamw, adam."),
    (dict(schedule="cosine"), "--schedule cosine: unknown value. Use one of linear, constant."),
    (dict(metric="auc"), "--metric auc: unknown value. Use one of accuracy, f1_macro, loss."),
    (dict(precision="fp8"), "--precision fp8: unknown value. Use one of auto, fp32, bf16, fp16."),
    (dict(device="gpu"), "--device gpu: not a device. Use auto, cpu, cuda, cuda:N or mps."),
    (dict(model=" "), "--model: give a model"),
    (dict(compile="yes"), "--compile yes: unknown mode. Use one of default, reduce-overhead"),
    (dict(recipe="tutorial", packing=True), "--packing leaves out all padding"),
]


@pytest.mark.parametrize("settings, message", BAD_VALUES, ids=[str(s) for s, _ in BAD_VALUES])
def test_bad_values_are_refused_when_the_config_is_built(settings, message):
    with pytest.raises(bertsent.BertsentError) as info:
        TrainConfig(**settings)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_command_line_values_are_converted_and_checked_by_the_config():
    config = TrainConfig(epochs="3", batch_size="auto", lr="2e-5", max_length="128", validation_fraction="0.2")
    assert (config.epochs, config.batch_size, config.lr, config.max_length) == (3, "auto", 2e-5, 128)
    assert config.validation_fraction == 0.2
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 4  # a config does not change once built; dataclasses.replace makes a new one


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(grad_accum=0), "--grad-accum 0: must be at least 1."),
        (dict(epochs=0), "--epochs 0: must be at least 1."),
        (dict(epoch=2), "unknown setting 'epoch'. Training settings are:"),
    ],
)
def test_python_api_refuses_bad_settings_before_any_work(settings, message, tmp_path):
    texts, labels = make_reviews(20)
    with pytest.raises(bertsent.BertsentError, match=message):
        bertsent.train(TextDataset(texts, labels), out=tmp_path / "m", log=lambda *_: None, **settings)
    assert list(tmp_path.iterdir()) == []


SETTINGS = [f.name for f in dataclasses.fields(TrainConfig)]
COMMANDS = {"train": [], "compare": ["--models", "minilm"], "audit": [], "tune": []}


def _takes(command: str, name: str) -> bool:
    """Whether `bertsent COMMAND --name VALUE` parses into that setting, as given (public argparse only)."""
    options = flag_options(next(f for f in dataclasses.fields(TrainConfig) if f.name == name))
    words, expected = ([flag(name)], True) if "action" in options else ([flag(name), "7"], "7")
    try:
        args = build_parser().parse_args([command, *COMMANDS[command], *words])
    except SystemExit:
        return False
    return getattr(args, name, None) == expected


def test_every_training_setting_has_a_flag_with_help(capsys):
    for setting in dataclasses.fields(TrainConfig):
        assert setting.metadata.get("help", "").strip(), f"{setting.name}: no help text"
        assert _takes("train", setting.name), setting.name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for name in SETTINGS:
        said = " ".join(
            flag_options(next(f for f in dataclasses.fields(TrainConfig) if f.name == name))["help"].split()
        )
        assert flag(name) in shown and said.replace("%%", "%") in shown, name


def test_train_compare_audit_and_tune_take_the_same_training_flags():
    taken = {command: {name for name in SETTINGS if _takes(command, name)} for command in COMMANDS}
    assert taken["train"] == set(SETTINGS)
    assert taken["audit"] == taken["tune"] == taken["train"]  # tune's searched ones take a space (LO:HI) instead
    assert taken["compare"] == taken["train"] - {"model"}  # compare's own --models
    tune = build_parser().parse_args(["tune", "--class-weights", "auto", "--lr", "1e-5:1e-4", "--no-calibrate"])
    assert training_settings(tune) == {"class_weights": "auto", "lr": "1e-5:1e-4", "calibrate": False}


def test_generated_flags_keep_the_command_lines_spelling():
    args = build_parser().parse_args(["train", "--compile", "--no-packing", "--no-calibrate", "--epochs", "3"])
    assert training_settings(args) == {"compile": True, "packing": False, "calibrate": False, "epochs": "3"}
    assert training_settings(build_parser().parse_args(["train"])) == {}  # left out: the recipe's (or resumed)
    assert TrainConfig(**training_settings(args)).compile == "default"


def test_resolve_fills_in_the_recipe_model_and_data():
    config = TrainConfig().resolve(**FACTS)
    assert (config.epochs, config.batch_size, config.micro_batch_size) == (2, 32, 32)
    assert config.lr == 1e-4  # small model
    assert config.max_length == 128  # the 99th percentile of 10..109 tokens, rounded up to 32
    assert TrainConfig().resolve(**FACTS | {"parameters": 110_000_000}).lr == 3e-5
    auto = TrainConfig(batch_size="auto").resolve(**FACTS)
    assert (auto.batch_size, auto.micro_batch_size) == (32, "auto")
    assert TrainConfig(batch_size=16, micro_batch_size=4).resolve(**FACTS).micro_batch_size == 4
    assert TrainConfig(packing=True).resolve(**FACTS | {"packing_supported": False}).packing is False
    assert TrainConfig(max_length="auto").resolve(**FACTS | {"max_positions": 64}).max_length == 64
    with pytest.raises(
        bertsent.BertsentError, match="--max-length 512 .the tutorial recipe's.: the model takes at most"
    ):
        TrainConfig(recipe="tutorial").resolve(**FACTS | {"max_positions": 128})
    concrete = dataclasses.asdict(config)
    assert all(
        concrete[k] is not None
        for k in concrete
        if k
        not in (
            "max_tokens",
            "max_train_samples",
            "early_stopping",
            "eval_every",
            "checkpoint_every",
            "attention_dropout",
            "stride",  # stride and max_windows: with --truncation windows only
            "max_windows",
            "class_weights",  # None: no weights; "auto" becomes numbers once the classes are known (fit)
        )
    )
