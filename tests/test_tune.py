"""`bertsent tune`: a study's outputs, pruning, resuming from SQLite, two processes on one storage, the space forms
(a bad space's one-line refusal is a row of test_cli's test_the_command_line_refuses_in_one_line)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna  # the dev extra installs it (bertsent[tune])
import pytest

from bertsent import training
from bertsent.cli import main
from bertsent.cli.parser import build_parser, training_settings
from bertsent.training import TrainConfig
from bertsent.workflows import tune as tune_module

from conftest import make_reviews, one_line_error, read_csv_rows

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@pytest.fixture
def toy_data(write_csv):
    train = write_csv(list(zip(*make_reviews(120, seed=1))), "train.csv")
    val = write_csv(list(zip(*make_reviews(40, seed=2))), "val.csv")
    return train, val


def tune_args(tiny_model_dir, toy_data, *extra) -> list[str]:
    train, val = toy_data
    return [
        "tune",
        "--data",
        str(train.name),
        "--eval-data",
        str(val.name),
        "--model",
        str(tiny_model_dir),
        "--lr",
        "1e-3:1e-2",
        "--batch-size",
        "16,32",
        "--quiet",
        *extra,
    ]


def stored_trials(db: Path, states=FINISHED):
    study = optuna.load_study(study_name=tune_module.DEFAULT_STUDY, storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False, states=states)


def test_study_writes_table_plot_best_command_and_best_model(tiny_model_dir, toy_data, capsys, monkeypatch):
    calls = []
    real_tokenize = tune_module.tokenize
    monkeypatch.setattr(
        tune_module, "tokenize", lambda tok, texts: calls.append(len(texts)) or real_tokenize(tok, texts)
    )
    code = main(tune_args(tiny_model_dir, toy_data, "--trials", "3", "--epochs", "1", "--out", "study"))
    printed = capsys.readouterr().out
    assert code == 0
    summary = json.loads(Path("study/tune.json").read_text())
    assert [r["trial"] for r in summary["trials"]] == [0, 1, 2]
    assert calls == [120, 40]  # tokenized once, for all three trials: the second and third tokenize nothing
    assert summary["tokenization"]["texts_tokenized"] == 160
    rows = read_csv_rows("study/trials.csv")
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} <= {"complete", "pruned"}
    assert Path("study/trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = summary["best"]
    assert best["value"] == max(r["value"] for r in summary["trials"] if r["value"] is not None)
    assert json.loads(Path("study/best/trial.json").read_text())["trial"] == best["trial"]
    assert (Path("study/best") / "bertsent.json").is_file()
    assert list(Path("study/trials").iterdir()) == []  # the other trials' models are gone
    assert "Train it again with:" in printed and f"Best: trial {best['trial']}" in printed

    # The printed command parses with bertsent's own parser and gives the best trial's settings ...
    command = shlex.split(summary["best_command"])
    assert command[:2] == ["bertsent", "train"]
    args = build_parser().parse_args(command[1:])
    settings = training_settings(args)
    config = TrainConfig(**settings)
    for name, value in best["settings"].items():
        assert getattr(config, name) == value, name
    assert args.data == "train.csv" and args.eval_data == "val.csv" and config.model == str(tiny_model_dir)
    # ... and trains the best trial's model again: same data, split, seed and settings, same score.
    assert main([*command[1:], "--out", "again", "--quiet", "--no-report"]) == 0
    again = json.loads(Path("again/bertsent.json").read_text())
    assert again["metrics"]["validation"]["accuracy"] == pytest.approx(best["value"], abs=1e-9)


def test_a_trial_below_the_median_is_pruned(tiny_model_dir, toy_data, monkeypatch, capsys):
    # Trial 2 reports accuracy 0 at its first evaluation: below the median of trials 0 and 1 there.
    real = tune_module.Search._reporter

    def third_reports_zero(self, trial, epochs):
        report = real(self, trial, epochs)
        if trial.number != 2:
            return report
        return lambda step, epoch, metrics: report(step, epoch, {**metrics, "accuracy": 0.0})

    monkeypatch.setattr(tune_module.Search, "_reporter", third_reports_zero)
    assert main(tune_args(tiny_model_dir, toy_data, "--trials", "3", "--epochs", "2", "--out", "study")) == 0
    rows = {r["trial"]: r for r in json.loads(Path("study/tune.json").read_text())["trials"]}
    assert [rows[n]["state"] for n in (0, 1, 2)] == ["complete", "complete", "pruned"]
    assert rows[2]["evaluations"] == 1 and rows[2]["last_reported"] == 0.0  # stopped after its first epoch
    assert [rows[n]["evaluations"] for n in (0, 1)] == [2, 2]
    assert list(Path("study/trials").iterdir()) == []  # nothing left of the pruned run
    assert "pruned" in capsys.readouterr().out


def test_interrupted_study_resumes_from_sqlite_and_counts_trials_once(tiny_model_dir, toy_data, monkeypatch, capsys):
    real_fit, started = training.fit, []  # tune imports it from there when a trial starts

    def interrupted_third(*args, **kwargs):
        started.append(1)
        if len(started) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third trial
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(training, "fit", interrupted_third)
    args = tune_args(tiny_model_dir, toy_data, "--trials", "3", "--epochs", "1", "--storage", "sqlite:///study.db")
    assert main([*args, "--out", "study"]) == 130
    assert len(stored_trials(Path("study.db"))) == 2
    monkeypatch.setattr(training, "fit", real_fit)

    assert main([*args, "--out", "study"]) == 0  # the same command again: only the missing trial runs
    summary = json.loads(Path("study/tune.json").read_text())
    assert summary["ran_here"] == [3]  # trial 2 was interrupted (failed); trial 3 takes its place
    assert len(stored_trials(Path("study.db"))) == 3
    assert [r["state"] for r in summary["trials"]] == ["complete", "complete", "fail", "complete"]
    assert (Path("study/best") / "bertsent.json").is_file()

    assert main([*args, "--out", "study"]) == 0  # complete: nothing more runs
    assert json.loads(Path("study/tune.json").read_text())["ran_here"] == []
    assert len(stored_trials(Path("study.db"))) == 3

    capsys.readouterr()
    other_space = [*args, "--out", "study", "--lr", "1e-4:1e-3"]
    assert main(other_space) == 2  # the study was made with another space: refused, not mixed
    err = one_line_error(capsys, "tune")
    assert "other space" in err and "--study-name" in err


@pytest.mark.slow
def test_two_processes_share_one_storage(tiny_model_dir, write_csv, tmp_path):
    # N trials in all: two processes with --trials 6 on one storage run 6 between them, each trial once.
    train = write_csv(list(zip(*make_reviews(400, seed=1))), "train.csv")
    val = write_csv(list(zip(*make_reviews(40, seed=2))), "val.csv")
    common = tune_args(tiny_model_dir, (train, val), "--trials", "6", "--epochs", "2:3")
    common += ["--storage", f"sqlite:///{tmp_path / 'shared.db'}"]
    env = dict(os.environ, BERTSENT_TEST_THREADS="1", OMP_NUM_THREADS="1")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bertsent", *common, "--out", name],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    finished = stored_trials(tmp_path / "shared.db")
    assert len(finished) == 6
    ran = [json.loads((tmp_path / name / "tune.json").read_text())["ran_here"] for name in ("a", "b")]
    assert sorted(ran[0] + ran[1]) == sorted(t.number for t in finished)  # each trial run by one process
    assert ran[0] and ran[1], outputs  # side by side, not one after the other
    for name in ("a", "b"):  # both end with the whole study
        summary = json.loads((tmp_path / name / "tune.json").read_text())
        assert sum(r["state"] in ("complete", "pruned") for r in summary["trials"]) == 6


def test_space_forms():
    assert tune_module.parse_dimension("lr", "1e-5:1e-4") == tune_module.Dimension("range", (1e-5, 1e-4), False, True)
    assert tune_module.parse_dimension("batch_size", "16, 32").values == (16, 32)
    assert tune_module.parse_dimension("epochs", "2").kind == "fixed"
    assert tune_module.parse_dimension("epochs", None) == tune_module.Dimension("range", (1, 4), True, False)


def test_space_takes_what_a_value_must_be_from_train_configs_constraints(monkeypatch):
    """The search space had its own bounds beside TrainConfig's: a value is now checked by the setting's
    constraint (bertsent.checks), so the two cannot drift apart."""
    from bertsent.checks import Number, Whole

    monkeypatch.setitem(training.config.CONSTRAINTS, "epochs", Whole(2))
    monkeypatch.setitem(training.config.CONSTRAINTS, "lr", Number(0, 1e-3))
    with pytest.raises(tune_module.BertsentError, match=r"^--epochs 1:4: 1 must be at least 2\.$"):
        tune_module.parse_dimension("epochs", "1:4")
    with pytest.raises(tune_module.BertsentError, match=r"^--lr 1e-4:1e-2: 0\.01 must be in \[0, 0\.001\]\.$"):
        tune_module.parse_dimension("lr", "1e-4:1e-2")
    assert tune_module.parse_dimension("lr", "0:1e-3").values == (0, 1e-3)  # 0 allowed now: closed at both ends


def test_tune_takes_every_training_flag_it_does_not_search(tiny_model_dir, toy_data, monkeypatch, capsys):
    """`tune --class-weights auto` was refused ("unrecognized arguments") while tune(class_weights="auto") worked."""
    reached = {}

    def study(optuna, backend, name, config, identity):  # where the study would open: the config is complete
        reached.update(config=config, space=identity["space"])
        raise tune_module.BertsentError("study not opened in this test")

    monkeypatch.setattr(tune_module, "_open_study", study)
    flags = ["--class-weights", "auto", "--no-calibrate", "--early-stopping", "2", "--packing", "--max-windows", "3"]
    assert main([*tune_args(tiny_model_dir, toy_data), *flags, "--truncation", "windows"]) == 2
    assert "study not opened in this test" in capsys.readouterr().err
    config = reached["config"]
    assert (config.class_weights, config.calibrate, config.early_stopping, config.packing) == ("auto", False, 2, True)
    assert (config.truncation, config.max_windows) == ("windows", 3)
    assert reached["space"]["lr"] == "0.001:0.01 (log)" and config.lr is None  # searched: the space, not the config


@pytest.mark.parametrize(
    "lost", ["(sqlite3.OperationalError) table studies already exists", "UNIQUE constraint failed: alembic_version"]
)
def test_a_process_that_loses_the_race_to_make_a_new_storage_tries_again(monkeypatch, lost):
    """Two processes opening a new SQLite study at once: the one whose tables or schema row came second retries."""
    calls = []

    def storage(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError(lost)
        return "opened"

    monkeypatch.setattr(optuna.storages, "RDBStorage", storage)
    assert tune_module._storage(optuna, "sqlite:///study.db") == "opened" and len(calls) == 2
