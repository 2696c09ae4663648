"""`tune`: a hyperparameter search over training settings, with Optuna.

Each trial trains a model with settings drawn by a seeded TPE sampler (learning rate on a log scale, epochs,
batch size, warmup, weight decay, attention dropout) and reports each evaluation's validation score to
Optuna's median pruner, which ends a trial that falls below the median of earlier trials at the same
evaluation. The data is read, split and tokenized once for all trials.

A study is N trials in all, counting those already finished (complete or pruned) and those under way in
other processes. With a storage URL (`sqlite:///study.db`, or any database Optuna takes) a rerun after an
interruption runs only what is missing, and several processes or machines pointed at the same storage
share the study: Optuna's storage, heartbeat and sampler do that; this module only counts. A process
whose trials are done waits for the others' last trials, so that every process ends with the whole study.

OUT holds the best model (OUT/best; the other trials' models are removed as they finish), the table of
trials (trials.csv), the plot (trials.png) and tune.json (the trials, the best settings, the command that
trains them).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shlex
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bertsent.checks import Number, Whole, flag, negated, number, whole
from bertsent.defaults import DEFAULT_DATA, RUNS_DIR
from bertsent.errors import BertsentError
from bertsent.extras import require_extra
from bertsent.files import check_writable, partial_folder, write_atomic, write_json_atomic
from bertsent.modeling import hub
from bertsent.modeling.tokens import tokenize
from bertsent.training import TrainConfig
from bertsent.training.config import CONSTRAINTS

if TYPE_CHECKING:  # the command line reads SPACE: what trains is imported when a study runs
    from bertsent.data.sources import DataOptions, TextDataset

DEFAULT_STUDY = "bertsent-tune"
BEST_DIR = "best"
SUMMARY_FILE = "tune.json"
HEARTBEAT_SECONDS = 20  # a trial whose process sends no heartbeat for GRACE_SECONDS is failed (killed)
GRACE_SECONDS = 60
POLL_SECONDS = 5  # how often a process whose own trials are done looks at the others'
SIGNIFICANT = 3  # digits kept of a drawn number: the settings read well and the command repeats them exactly


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a range (`low`, `high`, on a log scale or not), a list of choices, or a value."""

    kind: str  # "range", "choice" or "fixed"
    values: tuple  # (low, high) for a range, the choices, or (value,)
    whole: bool = False
    log: bool = False

    def suggest(self, trial, name: str):
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        low, high = self.values
        if self.whole:
            return trial.suggest_int(name, low, high, log=self.log)
        return _significant(trial.suggest_float(name, low, high, log=self.log))

    def describe(self) -> str:
        if self.kind == "range":
            return f"{self.values[0]:g}:{self.values[1]:g}{' (log)' if self.log else ''}"
        return ",".join(f"{v:g}" for v in self.values)


class Searched(NamedTuple):
    """A searched setting's default space, and whether it is drawn on a log scale. What a value must be (a
    whole number, its bounds) is the setting's constraint in TrainConfig's CONSTRAINTS, the one place of
    checks."""

    default: str
    log: bool = False


# The searched settings (TrainConfig fields).
SPACE = {
    "lr": Searched("1e-5:3e-4", log=True),
    "epochs": Searched("1:4"),
    "batch_size": Searched("16,32,64", log=True),
    "warmup_ratio": Searched("0:0.2"),
    "weight_decay": Searched("0:0.1"),
    "attention_dropout": Searched("0:0.3"),
}
SEARCHED = tuple(SPACE)


def parse_dimension(name: str, text: str | None) -> Dimension:
    """`LO:HI` (a range), `A,B,...` (choices) or `X` (fixed), checked; None: the default space."""
    default, log = SPACE[name]
    constraint = CONSTRAINTS[name]
    assert isinstance(constraint, Whole | Number), name  # a searched setting is a number
    counts = isinstance(constraint, Whole)
    text = default if text is None else str(text).strip()
    shown = f"{flag(name)} {text}"
    syntax = "Give LO:HI (a range), A,B,... (choices) or one value"
    parts = text.split(":") if ":" in text else text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise BertsentError(f"{shown}: not numbers. {syntax}.") from None
    if not values or (":" in text and len(values) != 2):
        raise BertsentError(f"{shown}: {syntax}.")
    for value in values:
        if not math.isfinite(value) or (counts and not value.is_integer()):
            raise BertsentError(f"{shown}: {value:g} is not a {'whole ' if counts else ''}number. {syntax}.")
        try:
            constraint.check(name, int(value) if counts else value)
        except BertsentError:  # said for the whole space, in the constraint's words
            raise BertsentError(f"{shown}: {value:g} {constraint.rule}.") from None
    values = tuple(int(v) for v in values) if counts else values
    if ":" in text:
        if values[0] >= values[1]:
            raise BertsentError(f"{shown}: the low end must be below the high end, e.g. {default}.")
        return Dimension("range", values, counts, log)
    if len(set(values)) != len(values):
        raise BertsentError(f"{shown}: a choice is listed twice.")
    return Dimension("choice" if len(values) > 1 else "fixed", values, counts, log)


class TokenCache:
    """`tokens.tokenize` with a memory: the trials share one tokenizer and one data set, so after the first
    trial no text is tokenized again. Keyed by the tokenizer and the texts; truncation is done per run."""

    def __init__(self) -> None:
        self.entries: dict[tuple, list] = {}
        self.texts_tokenized = 0
        self.seconds = 0.0

    def __call__(self, tokenizer, texts: list[str]):
        digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
        key = (type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer), digest)
        if key not in self.entries:
            started = time.perf_counter()
            self.entries[key] = tokenize(tokenizer, texts)
            self.seconds += time.perf_counter() - started
            self.texts_tokenized += len(texts)
        return self.entries[key]


class SurplusTrial(Exception):
    """A trial started while another process took the study's last place: it is marked failed and not run."""


def tune(
    data: str | TextDataset = DEFAULT_DATA,
    eval_data: str | TextDataset | None = None,
    *,
    trials: int = 20,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    out: str | os.PathLike | None = None,
    space: dict | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: str | dict | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    log=print,
    **settings,
) -> dict:
    """Search training settings over `trials` trials (in all, with those already in the study's storage).

    `space`: {setting: "LO:HI" | "A,B,..." | "X"} for lr, epochs, batch_size, warmup_ratio, weight_decay,
    attention_dropout (default: SPACE). `settings`: the other TrainConfig settings, fixed for every trial
    (model, seed, metric, max_train_samples, ...). `allow_pickle`, `trust_remote_code`: as `train` takes them.
    Returns the summary written to OUT/tune.json."""
    from bertsent.data.sources import DataOptions
    from bertsent.workflows.run import train_config, training_data

    optuna = _import_optuna()
    plan = _plan(trials, timeout, space, settings)
    config = train_config(settings)
    backend = _storage(optuna, storage)  # a bad URL fails now, before the data is read
    out = Path(out).expanduser() if out is not None else None
    out = out or Path(RUNS_DIR) / f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    _check_out(out)
    study_name = study_name or DEFAULT_STUDY
    reading = DataOptions(text_column, label_column, label_map, encoding, drop_invalid)
    # a bad --model (or one with pickle weights only) fails now, not after reading the data
    hub.check_safe_weights(hub.resolve_model(config.model), allow_pickle)
    loading = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    train_set, validation = training_data(data, eval_data, reading, config, log)
    if validation is None:
        raise BertsentError("tune compares validation scores: give --eval-data, or a --validation-fraction above 0.")
    identity = {
        "train": train_set.fingerprint(),
        "validation": validation.fingerprint(),
        "metric": config.metric,
        "space": {name: dim.describe() for name, dim in plan.items()},
        "settings": {k: v for k, v in config.as_dict().items() if k in settings},
    }
    identity = json.loads(json.dumps(identity))  # as the storage gives it back: lists, not tuples
    with _optuna_quiet(optuna):
        study = _open_study(optuna, backend, study_name, config, identity)
        (out / "trials").mkdir(parents=True, exist_ok=True)
        if not (out / SUMMARY_FILE).exists():  # marks OUT as a tune folder, which a resumed study may add to
            write_json_atomic(out / SUMMARY_FILE, {"study": study_name, "storage": storage, "trials": []})
        search = Search(
            optuna, study, plan, config, train_set, validation, out, trials, progress, log, storage is not None, loading
        )
        sample = f", {config.max_train_samples} of them a trial" if config.max_train_samples else ""
        log(
            f"Study {study_name!r} ({storage or 'in memory'}): {trials} trials of {config.model} on {train_set.name} "
            f"({len(train_set)} texts{sample}; validation {validation.name}, {len(validation)}), best {config.metric}; "
            f"space: " + ", ".join(f"{name} {dim.describe()}" for name, dim in plan.items())
        )
        search.run(timeout)
    loaded = settings | {name: True for name, on in loading.items() if on}  # train needs the same to load it
    summary = search.summary(
        _best_command(data, eval_data, reading, loaded, search.best_settings(), config.seed), study_name, storage
    )
    write_json_atomic(out / SUMMARY_FILE, summary)
    _write_table(out / "trials.csv", summary["trials"])
    summary["plot"] = _plot(out / "trials.png", summary["trials"], config.metric, summary["direction"])
    write_json_atomic(out / SUMMARY_FILE, summary)
    summary["out"] = str(out)
    return summary


def _plan(trials: int, timeout, space: dict | None, settings: dict) -> dict[str, Dimension]:
    whole("trials", trials, 1, rule="give a whole number of at least 1")
    if timeout is not None:
        number("timeout", timeout, 0, closed="neither", rule="give a number of seconds above 0")
    space = dict(space or {})
    unknown = sorted(set(space) - set(SEARCHED))
    if unknown:
        raise BertsentError(f"unknown searched setting {unknown[0]!r}. tune searches {', '.join(SEARCHED)}.")
    searched_and_fixed = sorted(set(settings) & set(SEARCHED))
    if searched_and_fixed:
        name = searched_and_fixed[0]
        raise BertsentError(f"{name} is searched: give it in the space ({flag(name)} X fixes it).")
    return {name: parse_dimension(name, space.get(name)) for name in SEARCHED}


def _check_out(out: Path) -> None:
    """OUT is new, empty, or an earlier tune's folder (a resumed study adds to it), and can be written."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / SUMMARY_FILE).exists())):
        raise BertsentError(f"--out {out}: exists and is not a tune folder. Choose another --out.")
    problem = check_writable(out / SUMMARY_FILE)
    if problem:
        raise BertsentError(f"--out {out}: cannot write there ({problem}). Choose another --out.")


def _import_optuna():
    return require_extra("tune", "tune", "optuna")


@contextlib.contextmanager
def _optuna_quiet(optuna):
    """Optuna's own log lines repeat ours (and print a traceback for a surplus trial): warnings only."""
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna, and has been since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


STORAGE_ATTEMPTS = 5
RACES = ("already exists", "locked", "UNIQUE constraint failed")  # a new database made by two at once


def _storage(optuna, storage: str | None):
    """Optuna's database storage with heartbeats (a killed process's trial is failed), or None: in memory."""
    if storage is None:
        return None
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with _optuna_quiet(optuna):
                return optuna.storages.RDBStorage(
                    storage,
                    engine_kwargs={"connect_args": {"timeout": 60}} if storage.startswith("sqlite") else None,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                )
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's and Optuna's errors for a bad URL are many kinds
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # Processes that open a new database at the same moment race to create its tables ("table
            # studies already exists", or the schema version row: "UNIQUE constraint failed"): the loser tries
            # again and finds them made.
            if attempt + 1 < STORAGE_ATTEMPTS and any(word in reason for word in RACES):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise BertsentError(
                f"--storage {storage}: cannot open it ({reason}). Give a database URL such as sqlite:///study.db."
            ) from None


def _open_study(optuna, backend, name: str, config: TrainConfig, identity: dict):
    """The study, created or loaded; a loaded one must have been made on the same data, space and settings."""
    direction = "minimize" if config.metric == "loss" else "maximize"
    try:
        study = optuna.create_study(storage=backend, study_name=name, direction=direction, load_if_exists=True)
    except ValueError as exc:  # e.g. a study of that name made with another direction
        raise BertsentError(f"--study-name {name}: {exc}. Choose another --study-name.") from None
    earlier = study.user_attrs.get("bertsent")
    if earlier is None and study.get_trials(deepcopy=False):
        raise BertsentError(f"--study-name {name}: that study was not made by bertsent tune. Choose another name.")
    if earlier is None:
        study.set_user_attr("bertsent", identity)
    elif earlier != identity:
        key = next(k for k in identity if earlier.get(k) != identity[k])
        what = {"train": "training data", "validation": "validation data"}.get(key, key)
        raise BertsentError(
            f"--study-name {name}: the study in the storage was started with other {what} ({earlier.get(key)}, "
            f"now {identity[key]}). Run it with the same data and flags, or choose another --study-name."
        )
    return study


class Search:
    """Runs the study's missing trials in this process: each a `fit` with drawn settings into OUT/trials/N."""

    def __init__(
        self, optuna, study, plan, config, train_set, validation, out, trials, progress, log, shared, loading
    ) -> None:
        self.optuna, self.study, self.plan, self.config = optuna, study, plan, config
        self.train_set, self.validation, self.out, self.trials = train_set, validation, out, trials
        self.progress, self.log, self.shared = progress, log, shared
        self.loading = loading  # fit's allow_pickle and trust_remote_code
        self.tokens = TokenCache()
        self.ran: list[int] = []  # the trials this process ran
        self.sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1

    # -- the loop: count, wait for others, run one trial at a time
    def run(self, timeout: float | None) -> None:
        TrialState = self.optuna.trial.TrialState
        started, waiting = time.time(), False
        while True:
            if self.shared:  # trials of killed processes (no heartbeat) count as failed, so they are run again
                self.optuna.storages.fail_stale_trials(self.study)
            states = [t.state for t in self.study.get_trials(deepcopy=False)]
            done = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
            running = states.count(TrialState.RUNNING)
            if done >= self.trials:
                break
            if timeout is not None and time.time() - started > timeout:
                self.log(f"--timeout {timeout:g}: no more trials started ({done} of {self.trials} done).")
                break
            if done + running >= self.trials:  # the rest are under way elsewhere
                if not waiting:
                    self.log(f"{done} of {self.trials} trials done; waiting for {running} running in other processes")
                waiting = True
                time.sleep(POLL_SECONDS)
                continue
            waiting = False
            self.study.sampler = self._sampler(len(states))
            self.study.pruner = self.optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
            self.study.optimize(self._objective, n_trials=1, catch=(SurplusTrial,))

    def _sampler(self, trials_so_far: int):
        # Seeded by the seed and the trial's place, so a rerun draws the same settings; a few random trials
        # first, then TPE (its default of 10 random ones would be a whole small study).
        return self.optuna.samplers.TPESampler(
            seed=self.config.seed * 10_007 + trials_so_far,
            n_startup_trials=max(2, min(10, self.trials // 3)),
            multivariate=True,
        )

    # -- one trial
    def _objective(self, trial) -> float:
        from bertsent.training import fit

        TrialState = self.optuna.trial.TrialState
        ahead = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.number < trial.number and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ]
        if len(ahead) >= self.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial()
        chosen = {name: dim.suggest(trial, name) for name, dim in self.plan.items()}
        trial.set_user_attr("settings", chosen)
        trial.set_user_attr("host", socket.gethostname())
        folder = self.out / "trials" / f"trial-{trial.number}"
        shutil.rmtree(folder, ignore_errors=True)  # left by a killed run of this trial number in this OUT
        shutil.rmtree(partial_folder(folder), ignore_errors=True)
        self.ran.append(trial.number)
        self.log(
            f"-- trial {trial.number} ({len(ahead) + 1} of {self.trials}): "
            + ", ".join(f"{k} {v:g}" for k, v in chosen.items())
        )
        started = time.time()
        kept = False
        try:
            result = fit(
                self.train_set,
                self.validation,
                TrainConfig(**{**self.config.as_dict(), **chosen}),
                folder,
                progress=self.progress,
                log=self.log,
                report=False,
                on_evaluation=self._reporter(trial, chosen["epochs"]),
                tokenize=self.tokens,
                **self.loading,
            )
            value = float(result.metrics[self.config.metric])
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            trial.set_user_attr("best_epoch", result.best_epoch)
            kept = self._keep_if_best(trial.number, value, folder)
            self.log(
                f"trial {trial.number}: {self.config.metric} {value:.4f} in {time.time() - started:.0f} s"
                + ("  (best so far: OUT/best)" if kept else "")
            )
            return value
        except self.optuna.TrialPruned:
            trial.set_user_attr("seconds", round(time.time() - started, 1))
            raise
        finally:
            if not kept:  # the models of all but the best are removed as soon as they are scored
                shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(partial_folder(folder), ignore_errors=True)

    def _reporter(self, trial, epochs: int):
        """fit's on_evaluation: report each evaluation's score; prune below the median, except at the end."""
        count = 0
        metric = self.config.metric

        def on_evaluation(step: int, epoch: float, metrics: dict) -> None:
            nonlocal count
            count += 1
            value = float(metrics[metric])
            trial.report(value, count)
            if epoch < epochs and trial.should_prune():
                self.log(f"trial {trial.number}: pruned at epoch {epoch:g} ({metric} {value:.4f}, below the median)")
                raise self.optuna.TrialPruned(f"{metric} {value:.4f} at epoch {epoch:g}")

        return on_evaluation

    def _keep_if_best(self, number: int, value: float, folder: Path) -> bool:
        """Make this trial's model OUT/best when it beats every finished trial of the study."""
        TrialState = self.optuna.trial.TrialState
        others = [t.value for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if others and not self.sign * value > max(self.sign * v for v in others):
            return False
        best = self.out / BEST_DIR
        if best.exists():
            old = self.out / f".{BEST_DIR}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(best, old)
            os.replace(folder, best)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(folder, best)
        write_json_atomic(best / "trial.json", {"trial": number, "value": value})
        return True

    # -- results
    def best_trial(self):
        try:
            return self.study.best_trial
        except ValueError:  # no complete trial
            return None

    def best_settings(self) -> dict | None:
        best = self.best_trial()
        return None if best is None else best.user_attrs.get("settings", best.params)

    def summary(self, command: str | None, study_name: str, storage: str | None) -> dict:
        TrialState = self.optuna.trial.TrialState
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("surplus") or t.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            last = max(t.intermediate_values) if t.intermediate_values else None
            rows.append(
                {
                    "trial": t.number,
                    "state": t.state.name.lower(),
                    "value": t.value if t.state == TrialState.COMPLETE else None,
                    "last_reported": t.intermediate_values[last] if last is not None else None,
                    "evaluations": len(t.intermediate_values),
                    **t.user_attrs.get("settings", {}),
                    "seconds": t.user_attrs.get("seconds"),
                    "here": t.number in self.ran,
                }
            )
        best = self.best_trial()
        kept = self.out / BEST_DIR / "trial.json"
        kept_trial = _read_json(kept).get("trial") if kept.exists() else None
        return {
            "study": study_name,
            "storage": storage,
            "metric": self.config.metric,
            "direction": self.study.direction.name.lower(),
            "trials_wanted": self.trials,
            "trials": rows,
            "ran_here": self.ran,
            "best": None
            if best is None
            else {
                "trial": best.number,
                "value": best.value,
                "settings": self.best_settings(),
                "model_dir": str(self.out / BEST_DIR) if kept_trial == best.number else None,
                "host": best.user_attrs.get("host"),
            },
            "best_command": command,
            "tokenization": {
                "texts_tokenized": self.tokens.texts_tokenized,
                "seconds": round(self.tokens.seconds, 2),
                "trials_run": len(self.ran),
            },
        }


def _best_command(data, eval_data, reading: DataOptions, settings: dict, best: dict | None, seed: int) -> str | None:
    """`bertsent train ...` with the fixed settings and the best trial's, on the same data and split."""
    if best is None:
        return None
    words = ["bertsent", "train", "--data", data if isinstance(data, str) else "DATA"]
    if eval_data is not None:
        words += ["--eval-data", eval_data if isinstance(eval_data, str) else "EVAL_DATA"]
    for name in ("text_column", "label_column"):
        if getattr(reading, name):
            words += [flag(name), getattr(reading, name)]
    if isinstance(reading.label_map, str):
        words += ["--label-map", reading.label_map]
    if reading.encoding != "utf-8":
        words += ["--encoding", reading.encoding]
    if reading.drop_invalid:
        words.append("--drop-invalid")
    given = {k: v for k, v in settings.items() if v is not None and k != "seed"}
    for name, value in {**given, "seed": seed, **best}.items():
        words += _flag_words(name, value)
    return " ".join(shlex.quote(str(w)) for w in words)


def _flag_words(name: str, value) -> list[str]:
    if isinstance(value, bool):  # every on/off setting has both flags (bertsent.cli.parser)
        return [flag(name) if value else negated(name)]
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return [flag(name), f"{value:g}" if isinstance(value, float) else str(value)]


def _significant(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_table(path: Path, rows: list[dict]) -> None:
    columns = ["trial", "state", "value", "last_reported", "evaluations", *SEARCHED, "seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buffer.getvalue())


def _plot(path: Path, rows: list[dict], metric: str, direction: str) -> str | None:
    """Each trial's score (pruned ones at their last reported score, marked x) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    complete = [r for r in rows if r["state"] == "complete"]
    pruned = [r for r in rows if r["state"] == "pruned" and r["last_reported"] is not None]
    if not complete and not pruned:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.scatter([r["trial"] for r in complete], [r["value"] for r in complete], label="complete", zorder=3)
    if pruned:
        axes.scatter(
            [r["trial"] for r in pruned],
            [r["last_reported"] for r in pruned],
            marker="x",
            color="grey",
            label="pruned (last score)",
            zorder=3,
        )
    best, line = None, []
    pick = max if direction == "maximize" else min
    for r in complete:
        best = r["value"] if best is None else pick(best, r["value"])
        line.append((r["trial"], best))
    if line:
        axes.step(*zip(*line), where="post", color="tab:orange", label="best so far")
    axes.set_xlabel("trial")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(f"validation {metric}")
    axes.legend()
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    write_atomic(path, buffer.getvalue())
    return str(path)
