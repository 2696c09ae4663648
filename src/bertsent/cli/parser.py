"""The command line's flags. The training flags are made from TrainConfig's fields (their help text, their
constraints), for `train`, `compare`, `audit` and `tune`; values are passed on as given and checked by
TrainConfig, so the command line and Python refuse the same values in the same words."""

from __future__ import annotations

import argparse
from dataclasses import Field, fields

# Only light modules (names, defaults, help texts): building the parser imports no torch. bertsent --help
# must start at once (tests/test_startup.py).
from bertsent.checks import Switch, flag
from bertsent.defaults import BACKENDS, BASELINES, DEFAULT_DATA, TRUNCATIONS
from bertsent.environment import package_version
from bertsent.modeling.hub import ALLOW_PICKLE_HELP, TRUST_REMOTE_CODE_HELP
from bertsent.training import TrainConfig
from bertsent.training.config import CONSTRAINTS

# Limits fields `bertsent serve` takes (metavar, help); the flag is the name without "_s", in dashes.
SERVE_LIMITS = {
    "max_texts": ("N", "texts per request"),
    "max_chars": ("N", "characters per text"),
    "max_inflight": ("N", "requests answered at once"),
    "max_batch_tokens": ("N", "tokens scored together from concurrent requests"),
    "max_wait_ms": ("MS", "how long a batch waits for requests on their way"),
    "header_timeout_s": ("S", "seconds a connection has to send a request's headers (then 408, closed)"),
    "body_timeout_s": ("S", "seconds a request has to send its whole body (then 408, closed)"),
    "max_client_connections": (
        "N",
        "open connections from one address (more: 429); behind a reverse proxy raise it, or 0 for no cap",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertsent", description="Fine-tune, evaluate and use BERT-family sentiment models, offline by default."
    )
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = add_training_command(
        commands,
        "train",
        out="model folder to write (default runs/<model>-<data>-<time>)",
        help="fine-tune a model on labeled text",
        description="Fine-tune a model. With no arguments: the packaged MiniLM on "
        "the Rotten Tomatoes snippets. Under torchrun or accelerate launch, "
        "data-parallel on every process.",
    )
    train.add_argument("--overwrite", action="store_true", help="replace --out once the new model is complete")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from its last checkpoint; settings left out are the checkpoint's, "
        "and any given must equal them",
    )
    train.add_argument(
        "--resume-with-checkpoint-settings",
        action="store_true",
        help="--resume, continuing with the checkpoint's settings where the flags given differ",
    )
    train.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train N times (seeds --seed, --seed+1, ...) into OUT/seed-N; print mean and std",
    )
    train.add_argument(
        "--tensorboard",
        nargs="?",
        const=True,
        metavar="DIR",
        help="also log to TensorBoard (default MODEL_DIR/tensorboard; needs bertsent[tensorboard])",
    )
    train.add_argument("--no-report", action="store_true", help="skip report.html, metrics.json and the charts")
    add_baseline_flag(train)

    evaluate = add_model_command(commands, "evaluate", help="score a trained model on labeled data")
    evaluate.add_argument(
        "--data",
        required=True,
        metavar="SRC",
        help="labeled data (aclImdb sources use their test split unless SRC:train is given)",
    )
    add_data_flags(evaluate)
    evaluate.add_argument("--out", metavar="FILE", help="write the metrics as JSON")
    evaluate.add_argument(
        "--report", metavar="DIR", help="write metrics.json, report.html, errors.csv and charts into DIR"
    )
    add_prediction_flags(evaluate)
    evaluate.add_argument("--neutral-band", type=float, metavar="X", help="binary models: report unsure as neutral")
    add_baseline_flag(evaluate)
    evaluate.add_argument(
        "--train-data",
        metavar="SRC",
        help="--baseline tfidf: the model's training data (default: the source its folder records), read with the "
        "same columns and label map, split as training split it",
    )
    add_quiet_flag(evaluate)

    predict = add_model_command(commands, "predict", help="label new texts")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (or --file, or stdin)")
    predict.add_argument(
        "--file",
        metavar="F",
        help="CSV/TSV/JSONL/JSON/Parquet/plain-lines file of texts (also .gz/.bz2/.xz/.zip), read and written in "
        "chunks: any size",
    )
    predict.add_argument("--text-column", metavar="C")
    predict.add_argument("--encoding", default="utf-8")
    predict.add_argument("--out", metavar="F", help="write here instead of stdout (with --file: .jsonl, .csv or .tsv)")
    predict.add_argument(
        "--format", choices=["table", "jsonl", "csv", "tsv"], help="default: table, or from --out's suffix"
    )
    predict.add_argument(
        "--keep-columns",
        metavar="A,B|all",
        help="with --file: also write these input columns (all: every other one), before the predictions",
    )
    predict.add_argument(
        "--resume", action="store_true", help="with --file --out: continue an interrupted run where it stopped"
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="with --file --out: replace OUT (once the new one is complete), or start an interrupted run again",
    )
    predict.add_argument(
        "--shard",
        metavar="I/N",
        help="with --file --out: score rows I, I+N, I+2N, ... (I from 0) into OUT.part-I-of-N; join the N parts "
        "with `bertsent merge OUT`. Under torchrun each process takes the shard of its rank, merged at the end",
    )
    predict.add_argument(
        "--chunk-rows", type=int, metavar="N", help="with --file: rows read, scored and written at a time (2048)"
    )
    add_quiet_flag(predict)
    add_prediction_flags(predict)
    predict.add_argument(
        "--neutral-band", type=float, metavar="X", help="binary models: below 0.5+X/2 confidence the label is 'neutral'"
    )

    merge = commands.add_parser(
        "merge",
        help="join the parts of a sharded predict run",
        description="Merge OUT.part-I-of-N, written by `bertsent predict --file F --out OUT --shard I/N`, into OUT "
        "in row order, streaming. Every part must be complete and the N parts whole. They are removed once OUT "
        "is written.",
    )
    merge.add_argument("paths", nargs="*", metavar="PATH", help="OUT (its parts are found beside it), or the parts")
    merge.add_argument("--out", metavar="F", help="the merged file; the PATHs are then its parts")
    merge.add_argument("--format", choices=["jsonl", "csv", "tsv"], help="default: from OUT's suffix")
    merge.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    merge.add_argument("--keep-parts", action="store_true", help="leave the parts in place")
    add_quiet_flag(merge)

    compare = add_training_command(
        commands,
        "compare",
        out="folder for the models and the table (default runs/compare-<time>)",
        exclude=("model",),  # --models
        help="fine-tune several models on one split and compare them",
        description="Fine-tune each model on the same training data and validation "
        "split; print and write one table (OUT/compare.csv, .json).",
    )
    compare.add_argument("--models", required=True, metavar="A,B,...", help="models to compare, comma-separated")
    compare.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_baseline_flag(compare)
    add_tune_command(commands)
    add_audit_command(commands)

    data = commands.add_parser("data", help="size, labels and token lengths of a data source")
    data.add_argument("source", metavar="SRC")
    add_data_flags(data)
    data.add_argument("--model", default="minilm", metavar="M", help="tokenizer for the token lengths")
    add_remote_code_flag(data)
    data.add_argument("--json", action="store_true", help="print JSON")

    export = add_model_command(
        commands,
        "export",
        help="export a trained model to ONNX (fp32, and int8 kept only when accuracy holds)",
        description="Write MODEL_DIR/onnx/model.onnx (and model_int8.onnx with --int8), check them against "
        "PyTorch, and with --data keep int8 only within --max-drop accuracy points. Needs bertsent[onnx].",
    )
    export.add_argument(
        "--int8",
        action="store_true",
        help="also an int8 model (static quantization, calibrated on --data or the "
        "training sample the model folder keeps)",
    )
    export.add_argument(
        "--data", metavar="SRC", help="labeled data: accuracy of each model, temperatures refitted, int8 gate"
    )
    export.add_argument(
        "--max-drop", type=float, default=0.5, metavar="X", help="int8 kept if at most X accuracy points lower"
    )
    add_data_flags(export)
    add_quiet_flag(export)

    models = commands.add_parser("models", help="models usable offline on this machine")
    models.add_argument("--json", action="store_true", help="print JSON")
    add_serving_commands(commands)
    return parser


def add_model_command(commands, name: str, **about) -> argparse.ArgumentParser:
    """A command that uses a trained model: its first argument is the model folder, MODEL_DIR, in every command,
    and what loading it may do."""
    command = commands.add_parser(name, **about)
    command.add_argument("model_dir", metavar="MODEL_DIR", help="a trained model folder (what `bertsent train` wrote)")
    add_loading_flags(command)
    return command


class VersionAction(argparse.Action):
    """--version: the installed version, read from the package's metadata only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"bertsent {package_version()}")  # on stdout, as argparse's own version action
        parser.exit()


def add_tune_command(commands) -> None:
    """`tune`: the searched settings take a range LO:HI, choices A,B,... or one value; the others are fixed."""
    from bertsent.workflows.tune import SEARCHED, SPACE

    tune = add_training_command(
        commands,
        "tune",
        out="best model, table and plot (default runs/tune-<time>)",
        exclude=SEARCHED,  # the others, fixed for every trial
        help="search training settings with Optuna (resumable, shareable between processes)",
        description="Train --trials models with settings drawn by Optuna's TPE sampler, prune those below the "
        "median after an epoch, keep the best model (OUT/best) and print a table, a plot and the best settings as "
        "a `bertsent train` command. With --storage the study resumes after an interruption and other processes "
        "pointed at it run trials side by side; N trials in all, counting those already there.",
    )
    tune.add_argument("--trials", type=int, default=20, metavar="N", help="trials in the study, in all (default 20)")
    tune.add_argument("--storage", metavar="URL", help="Optuna storage, e.g. sqlite:///study.db (default: memory)")
    tune.add_argument("--study-name", metavar="NAME", help="the study in the storage (default bertsent-tune)")
    tune.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    space = tune.add_argument_group("searched settings: LO:HI (a range), A,B,... (choices) or X (fixed)")
    for name, searched in SPACE.items():
        scale = " (log scale)" if searched.log else ""
        space.add_argument(flag(name), metavar="SPACE", help=f"default {searched.default}{scale}")


def add_training_command(
    commands, name: str, out: str, exclude: tuple[str, ...] = (), validation: bool = True, **about
) -> argparse.ArgumentParser:
    """A command that trains models on labeled data (train, compare, tune, audit). What they share is declared
    here once: the data and how it is read, --out (a folder: `out` is its help), what loading the base model may
    do, a flag for each training setting (but `exclude`) and --quiet; `validation`: also --eval-data. The command
    adds what is its own."""
    command = commands.add_parser(name, **about)
    command.add_argument(
        "--data",
        default=DEFAULT_DATA,
        metavar="SRC",
        help="training data: a file, an aclImdb folder/archive, imdb or rotten-tomatoes "
        "(default; aclImdb sources use their train split unless SRC:test is given)",
    )
    if validation:
        command.add_argument(
            "--eval-data",
            metavar="SRC",
            help="validation data (default: a stratified share of --data, --validation-fraction)",
        )
    add_data_flags(command)
    command.add_argument("--out", metavar="DIR", help=out)
    add_loading_flags(command)
    add_training_flags(command, exclude)
    add_quiet_flag(command)
    return command


def add_baseline_flag(parser: argparse.ArgumentParser) -> None:
    """`--baseline tfidf`: a baseline beyond the majority class and the uniform guess (always shown)."""
    parser.add_argument(
        "--baseline",
        choices=BASELINES,
        help="also fit TF-IDF + logistic regression on the training split and show its accuracy and macro F1 "
        "beside the model's (the majority-class and uniform-guess baselines are always shown)",
    )


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_loading_flags(parser: argparse.ArgumentParser) -> None:
    """What loading a model may do beyond reading safetensors and JSON, both off unless asked for: every command
    that loads one (add_model_command, add_training_command) declares them here."""
    group = parser.add_argument_group("loading the model (default: safetensors weights and JSON only, no code run)")
    group.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    add_remote_code_flag(group)


def add_remote_code_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--trust-remote-code alone: for `data`, which loads a tokenizer (code it may ship) but no weights."""
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)


def add_prediction_flags(parser: argparse.ArgumentParser) -> None:
    """How a trained model is run: `predict`, `evaluate` and `serve` alike."""
    parser.add_argument("--batch-size", type=int, default=64, metavar="N")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="auto: an exported ONNX model on CPU when the folder has one (bertsent export), else torch",
    )
    parser.add_argument(
        "--long",
        "--truncation",  # training's name for the same setting: one spelling works everywhere
        dest="truncation",
        choices=TRUNCATIONS,
        help="texts longer than --max-length: keep the head, the tail, both, or score it in windows "
        "and average them (default: windows)",
    )
    parser.add_argument(
        "--max-length", type=int, metavar="N", help="tokens per text or window (default: the training length)"
    )
    parser.add_argument(
        "--stride", type=int, metavar="N", help="windows: tokens between window starts (default: a whole window)"
    )
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: the machine's cores)")


def given(args: argparse.Namespace, *names: str) -> dict:
    """The command line's values under their own names: what a command passes on to the keyword of the same
    name (--max-drop to max_drop), as given."""
    return {name: getattr(args, name) for name in names}


def prediction_settings(args) -> dict:
    """`add_prediction_flags`' values, as `bertsent.load` takes them (batch size apart)."""
    return given(args, "backend", "truncation", "max_length", "stride", "threads", "allow_pickle", "trust_remote_code")


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """How a labeled source is read."""
    parser.add_argument("--text-column", metavar="C", help="column holding the text (detected when unambiguous)")
    parser.add_argument("--label-column", metavar="C", help="column holding the label (detected when unambiguous)")
    parser.add_argument(
        "--label-map",
        metavar="MAP",
        help='turn the data\'s labels into classes, e.g. "1,2=negative;3=neutral;4,5=positive" (=drop leaves '
        "rows out; every label must be covered)",
    )
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the data files (default utf-8)")
    parser.add_argument(
        "--drop-invalid", action="store_true", help="skip rows with an empty text or label instead of stopping"
    )


def add_training_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """A flag for each TrainConfig setting (but `exclude`), made from its field as transformers'
    HfArgumentParser does: the help from the field's metadata, the metavar from its constraint (N, X, a|b),
    an on/off setting as --name / --no-name. No defaults and no types here: a value reaches TrainConfig as
    given (a setting left out stays the recipe's, or a resumed checkpoint's), which converts and checks it."""
    group = parser.add_argument_group("training settings (default: the recipe's)")
    for setting in fields(TrainConfig):
        if setting.name not in exclude:
            group.add_argument(flag(setting.name), **flag_options(setting))


def flag_options(setting: Field) -> dict:
    """add_argument's keywords for a TrainConfig field."""
    command_line = dict(setting.metadata)
    said = command_line.pop("help").replace("%", "%%")  # argparse formats help text with %
    constraint = CONSTRAINTS.get(setting.name)
    if isinstance(constraint, Switch):
        on = " (default on)" if setting.default is True else ""
        return dict(action=argparse.BooleanOptionalAction, default=None, help=said + on)
    if setting.default not in (None, False) and "default" not in said:
        said += f" (default {setting.default})"
    options = dict(metavar=getattr(constraint, "metavar", "X"), help=said) | command_line
    if options.get("nargs") == "?":
        options["const"] = True  # the flag alone: on
    return options


def serve_limits(args: argparse.Namespace) -> dict:
    """The server's limits (bertsent.serving.limits.Limits fields) from `bertsent serve`'s flags."""
    return given(args, *SERVE_LIMITS)


def training_settings(args: argparse.Namespace) -> dict:
    """The TrainConfig settings given on the command line, as given."""
    names = [f.name for f in fields(TrainConfig)]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_audit_command(commands) -> None:
    """`audit`: rows most likely mislabeled, from out-of-fold predictions (cleanlab)."""
    audit = add_training_command(
        commands,
        "audit",
        out="folder for the results (default runs/audit-<data>-<time>)",
        validation=False,  # the folds hold rows out
        help="find rows that are probably mislabeled (cleanlab, k-fold out-of-fold predictions)",
        description="Split the data into --folds stratified folds, train a model on the other folds for each and "
        "score the held-out rows; cleanlab ranks the rows whose label disagrees most. Writes OUT/label_issues.csv "
        "and label_issues.html (and with --drop a copy of the data without the flagged rows). Needs "
        "bertsent[audit].",
    )
    audit.add_argument("--folds", type=int, default=5, metavar="K", help="folds, models trained (default 5)")
    audit.add_argument(
        "--drop", action="store_true", help="also write OUT/<data>.cleaned.<ext> without the flagged rows"
    )
    audit.add_argument("--top", type=int, default=10, metavar="N", help="issues printed (default 10)")
    audit.add_argument("--overwrite", action="store_true", help="replace an earlier audit in --out")


def add_serving_commands(commands) -> None:
    """`serve` (the HTTP API and its page) and `explain` (word attributions)."""
    from bertsent.evaluation.explain import DEFAULT_STEPS, MAX_AUTO_STEPS, STEPS_TOKENS
    from bertsent.serving.limits import API_KEY_ENV, Limits

    serve = add_model_command(
        commands,
        "serve",
        help="answer predictions over HTTP, with a page to try the model",
        description="Serve a trained model: POST /predict (and POST /, for Hugging Face's InferenceClient), "
        "POST /explain, GET /health, /info, /metrics, /docs, and a page at /. The model loads in the background; "
        "/health answers 503 until it is ready.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--api-key", metavar="KEY", help=f"require the header Authorization: Bearer KEY (default: ${API_KEY_ENV})"
    )
    add_prediction_flags(serve)
    serve.set_defaults(batch_size=None)  # the server's own (bertsent.serving.service.serving_batch_size)
    serve.add_argument(
        "--neutral-band", type=float, metavar="X", help="binary models: the band requests get unless they give one"
    )
    limits = serve.add_argument_group("limits (over them: 413, 429 for requests in flight, 408 for slow clients)")
    defaults = Limits()
    for name, (metavar, text) in SERVE_LIMITS.items():
        default = getattr(defaults, name)
        # the flag as Limits.check names it
        limits.add_argument(
            flag(name.removesuffix("_s")), dest=name, type=type(default), default=default, metavar=metavar, help=text
        )
    serve.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="a web page origin (https://example.com) allowed to call the API from a browser; repeatable "
        "(default: none, browsers refuse cross-origin calls)",
    )
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")

    explain = add_model_command(
        commands,
        "explain",
        help="show the words behind a model's decision",
        description="Word attributions by layer integrated gradients on the embedding layer (Captum): how much "
        "each word pushed the model towards the predicted label (or --target), in log-odds.",
    )
    explain.add_argument("texts", nargs="*", metavar="TEXT", help="texts to explain (or standard input, one a line)")
    explain.add_argument("--target", metavar="LABEL", help="the label to explain (default: the predicted one)")
    explain.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help=f"integration steps (default {DEFAULT_STEPS} for a text of {STEPS_TOKENS} tokens or more; a shorter "
        f"one gets more, as many as take the same time, up to {MAX_AUTO_STEPS})",
    )
    explain.add_argument(
        "--max-length", type=int, metavar="N", help="tokens explained per text (default: the training length)"
    )
    explain.add_argument("--format", choices=["text", "jsonl"], default="text", help="default: text")
    explain.add_argument("--top", type=int, default=5, metavar="N", help="text: the N strongest words (default 5)")
    explain.add_argument("--html", metavar="FILE", help="also write a page with the words shaded")
