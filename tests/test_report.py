"""Issue 4: the report files, errors.csv, the neutral band, seeds, TensorBoard and `compare`."""

import base64
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import bertsent
from bertsent.cli import main
from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError
from bertsent.evaluation.report import REPORT_FILES, write_report
from bertsent.training import TrainConfig, fit
from bertsent.workflows import experiments
from bertsent.workflows import run as api

from conftest import cli_args, make_reviews, read_csv_rows

PNGS = ["loss.png", "confusion_matrix.png", "reliability.png", "accuracy_by_length.png"]
QUIET = dict(progress=False, log=lambda *_: None)


def _datasets(n_train=160, n_val=40, classes=("negative", "positive")):
    tx, ty = make_reviews(n_train, seed=1, classes=classes)
    vx, vy = make_reviews(n_val, seed=2, classes=classes)
    return TextDataset(tx, ty, name="train"), TextDataset(vx, vy, name="val")


def _fit_tiny(model_dir, out, datasets, epochs=1, **options):
    """Train the tiny model quietly on `datasets` (train, val), without a report unless `options` say so."""
    config = TrainConfig(model=str(model_dir), epochs=epochs, batch_size=16)
    return fit(*datasets, config, out, **(QUIET | {"report": False} | options))


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A tiny model trained once for this module, with its report."""
    train, val = _datasets(96, 32)
    out = tmp_path_factory.mktemp("trained") / "model"
    config = TrainConfig(model=str(tiny_model_dir), epochs=3, batch_size=16, lr=5e-3)
    fit(train, val, config, out, **QUIET)
    return out


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//|file:)', page, re.I)
    assert not re.search(r"url\(", page)  # no CSS assets either
    for png in _data_uris(page):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


# -- the report on hand-made predictions ------------------------------------------------------------


def test_write_report_on_hand_made_predictions(tmp_path):
    texts = ["fine <b>film</b>", "dull", "great", "awful & boring", "good", "bad"]
    y_true = ["positive", "negative", "positive", "negative", "positive", "negative"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.7, 0.3]])
    records = [{"step": s, "epoch": s / 4, "loss": 0.7 - 0.05 * s, "lr": 1e-3} for s in range(1, 9)]
    records += [
        {"step": 4, "epoch": 1.0, "split": "validation", "loss": 0.6, "accuracy": 0.6, "f1_macro": 0.5},
        {"step": 8, "epoch": 2.0, "split": "validation", "loss": 0.5, "accuracy": 0.7, "f1_macro": 0.7},
    ]
    metrics = write_report(
        tmp_path / "r",
        texts=texts,
        y_true=y_true,
        probs=probs,
        classes=["negative", "positive"],
        lengths=[5, 3, 3, 6, 3, 3],
        probs_uncalibrated=probs**2 / (probs**2).sum(1, keepdims=True),
        training_log=records,
        info={"model": "hand-made"},
    )
    folder = tmp_path / "r"
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)  # and no temporary files left
    page = (folder / "report.html").read_text()
    _assert_self_contained(page)
    assert len(_data_uris(page)) == 4
    assert "fine &lt;b&gt;film&lt;/b&gt;" in page and "<b>film</b>" not in page  # review text is escaped
    on_disk = json.loads((folder / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    assert on_disk["accuracy"] == pytest.approx(4 / 6) and "ece_uncalibrated" in on_disk
    assert sum(b["n"] for b in on_disk["by_length"]) == 6
    rows = read_csv_rows(folder / "errors.csv")
    assert [r["index"] for r in rows] == ["0", "1"]  # the two mistakes, most confident (0.9, then 0.8) first
    assert [float(r["confidence"]) for r in rows] == sorted((float(r["confidence"]) for r in rows), reverse=True)
    assert set(rows[0]) == {"index", "text", "label", "predicted", "confidence", "p_negative", "p_positive"}
    assert rows[0]["text"] == "fine <b>film</b>" and rows[0]["predicted"] == "negative"


def test_report_without_validation_data_shows_the_training_curves(tmp_path):
    write_report(tmp_path, training_log=[{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}])
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json", "report.html", "loss.png"}
    assert "No labeled validation data" in (tmp_path / "report.html").read_text()


# -- train and evaluate write it ----------------------------------------------------------------------


def test_training_writes_the_report_into_the_model_folder(trained):
    for name in REPORT_FILES:
        assert (trained / name).is_file(), name
    metrics = json.loads((trained / "metrics.json").read_text())
    meta = json.loads((trained / "bertsent.json").read_text())
    assert metrics["accuracy"] == pytest.approx(meta["metrics"]["validation"]["accuracy"])
    assert {"ece", "ece_uncalibrated", "roc_auc", "per_class", "by_length", "reliability"} <= set(metrics)
    page = (trained / "report.html").read_text()
    _assert_self_contained(page)
    assert len(_data_uris(page)) == 4
    assert "before temperature scaling" in page
    assert not [p for p in trained.iterdir() if p.name.startswith(".")]  # no temporary files
    bertsent.load(trained)  # the extra files do not disturb loading


def test_no_report_option_skips_it(tiny_model_dir, tmp_path):
    _fit_tiny(tiny_model_dir, tmp_path / "m", _datasets(32, 8), report=False)
    assert not (tmp_path / "m" / "report.html").exists()


def test_evaluate_report_folder_and_out_file(trained, tmp_path, write_csv, capsys):
    texts, labels = make_reviews(30, seed=5)
    data = write_csv(list(zip(texts, labels)), "test.csv")
    code = main(
        [
            "evaluate",
            str(trained),
            "--data",
            str(data),
            "--report",
            str(tmp_path / "rep"),
            "--out",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0
    assert "report.html" in capsys.readouterr().out
    for name in REPORT_FILES:  # loss.png too: the model folder has its metrics.jsonl
        assert (tmp_path / "rep" / name).is_file(), name
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads((tmp_path / "rep" / "metrics.json").read_text())
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 30 and "ece_uncalibrated" in metrics and metrics["data"]["rows"] == 30
    n_errors = len(read_csv_rows(tmp_path / "rep" / "errors.csv"))
    assert n_errors == 30 - round(metrics["accuracy"] * 30)


# -- the neutral band ---------------------------------------------------------------------------------


def test_neutral_band_on_hand_made_probabilities(trained):
    model = bertsent.load(trained, neutral_band=0.2)  # neutral below 0.5 + 0.2 / 2 = 0.6 confidence
    assert model.neutral_band == 0.2
    probs = np.array([[0.55, 0.45], [0.45, 0.55], [0.59, 0.41], [0.61, 0.39], [0.1, 0.9], [0.5, 0.5]])
    assert model.labels_from_proba(probs) == ["neutral", "neutral", "neutral", "negative", "positive", "neutral"]
    assert bertsent.load(trained).labels_from_proba(probs)[:2] == ["negative", "positive"]  # no band: argmax
    model.neutral_band = 0.9  # neutral below 0.95
    assert model.labels_from_proba(probs) == ["neutral"] * 5 + ["neutral"]
    texts = ["great film", "awful film", "a film", "wonderful superb brilliant", "dull awful boring"]
    records = model.predict_records(texts)
    for record in records:  # neutral exactly where the top probability is under 0.95, else the most probable class
        probs = record["probs"]
        expected = "neutral" if max(probs.values()) < 0.95 else max(probs, key=probs.get)
        assert record["label"] == expected
    assert [r["label"] for r in records] == model.predict(texts)


def test_neutral_band_leaves_a_three_class_model_alone(tiny_model_dir, tmp_path):
    _fit_tiny(tiny_model_dir, tmp_path / "m3", _datasets(48, 12, classes=("negative", "neutral", "positive")))
    model = bertsent.load(tmp_path / "m3", neutral_band=0.5)
    probs = np.array([[0.4, 0.25, 0.35], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    assert model.labels_from_proba(probs) == ["negative", "neutral", "positive"]  # argmax: neutral is a class


def test_a_bad_neutral_band_is_a_user_error(trained, write_csv, capsys):
    with pytest.raises(BertsentError, match="neutral-band"):
        api.evaluate(trained, TextDataset(["good"], ["positive"]), neutral_band=1.5)
    assert main(["predict", str(trained), "good", "--neutral-band", "-0.1"]) == 2
    assert "--neutral-band -0.1" in capsys.readouterr().err


def test_evaluate_with_a_neutral_band_counts_neutral_as_wrong(trained, tmp_path):
    val = TextDataset(*make_reviews(20, seed=9), name="val")
    metrics = api.evaluate(trained, val, neutral_band=0.999, report=tmp_path / "r")
    assert metrics["accuracy"] == 0.0 and metrics["labels"][-1] == "neutral"  # every prediction is unsure
    rows = read_csv_rows(tmp_path / "r" / "errors.csv")
    assert len(rows) == 20 and {r["predicted"] for r in rows} == {"neutral"}


def _quick_run(write_csv, data, command, **flags) -> int:
    """`bertsent COMMAND` for one quiet epoch on `data` (texts, labels) written to train.csv, a quarter held out for
    validation; `flags` add to the command line."""
    csv = write_csv(list(zip(*data)), "train.csv")
    return main(cli_args(command, data=csv, epochs=1, validation_fraction=0.25, quiet=True, **flags))


# -- several seeds ------------------------------------------------------------------------------------


def test_train_with_seeds_writes_each_run_and_a_summary(tiny_model_dir, write_csv, tmp_path, capsys):
    data = make_reviews(60, seed=3)
    code = _quick_run(
        write_csv,
        data,
        "train",
        model=tiny_model_dir,
        out=tmp_path / "runs",
        seeds=2,
        seed=7,
        batch_size=16,
        no_report=True,
    )
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"accuracy\s+\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}", out)  # mean, std, one per seed
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert summary["seeds"] == [7, 8]
    for seed in (7, 8):
        meta = json.loads((tmp_path / "runs" / f"seed-{seed}" / "bertsent.json").read_text())
        assert meta["settings"]["seed"] == seed
    # Both runs were scored on the same validation split.
    fingerprints = {
        json.loads((tmp_path / "runs" / f"seed-{s}" / "bertsent.json").read_text())["data"]["validation"]["fingerprint"]
        for s in (7, 8)
    }
    assert len(fingerprints) == 1
    accuracy = summary["metrics"]["accuracy"]
    assert accuracy["mean"] == pytest.approx(np.mean(accuracy["values"]))
    assert accuracy["std"] == pytest.approx(np.std(accuracy["values"], ddof=1))
    assert "ece" in summary["metrics"] and "train_seconds" in summary["metrics"]


def test_seeds_need_validation_data(tiny_model_dir, tmp_path):
    train, _ = _datasets(32, 8)
    with pytest.raises(BertsentError, match="--eval-data"):
        experiments.train_seeds(
            train, seeds=2, out=tmp_path / "x", model=str(tiny_model_dir), validation_fraction=0, **QUIET
        )
    with pytest.raises(BertsentError, match="at least 1"):
        experiments.train_seeds(train, seeds=0, out=tmp_path / "x", model=str(tiny_model_dir), **QUIET)


# -- TensorBoard --------------------------------------------------------------------------------------


def test_tensorboard_missing_is_a_one_line_user_error(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    train, val = _datasets(32, 8)
    with pytest.raises(BertsentError, match=re.escape("pip install 'bertsent[tensorboard]'")) as info:
        fit(train, val, TrainConfig(model=str(tiny_model_dir), epochs=1), tmp_path / "m", tensorboard=True, **QUIET)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m").exists()


def test_tensorboard_logs_the_metrics_scalars(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit_tiny(tiny_model_dir, tmp_path / "m", _datasets(32, 8), epochs=2, tensorboard=True)
    events = EventAccumulator(str(tmp_path / "m" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "validation/accuracy", "validation/loss", "validation/ece"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("validation/accuracy")] == [2, 4]


# -- compare ------------------------------------------------------------------------------------------


def test_compare_writes_one_table(tiny_model_dir, write_csv, tmp_path, capsys):
    models = f"{tiny_model_dir},{tiny_model_dir}"
    options = {"out": tmp_path / "cmp", "batch_size": "auto", "max_train_samples": 32}
    code = _quick_run(write_csv, make_reviews(48, seed=4), "compare", models=models, **options)
    assert code == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "pred/s" in out
    table = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = read_csv_rows(tmp_path / "cmp" / "compare.csv")
    assert len(table["models"]) == len(rows) == 2
    assert list(rows[0]) == list(experiments.COMPARE_COLUMNS)
    assert rows[0]["model_dir"] != rows[1]["model_dir"]  # the same model twice gets two folders
    for row in table["models"]:
        assert 0 <= row["accuracy"] <= 1 and row["ece"] is not None and row["predictions_per_s"] > 0
        assert row["parameters"] > 500_000 and row["size_mb"] > 1 and row["train_seconds"] > 0
    assert table["models"][0]["parameters"] == table["models"][1]["parameters"]


def test_compare_needs_models(tmp_path):
    with pytest.raises(BertsentError, match="--models"):
        experiments.compare([" ", ""], TextDataset(["a"], ["b"]), out=tmp_path / "x")


# -- report.html in a real browser --------------------------------------------------------------------


def _chromium():
    return next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(n)), None
    )


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (apt-get install chromium)")
def test_report_renders_in_headless_chromium(trained, tmp_path):
    from PIL import Image

    flags = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ]
    # Images loaded: a copy of the page with a probe that counts decoded images once the page has loaded.
    probe = tmp_path / "probe.html"
    page = (trained / "report.html").read_text()
    probe.write_text(
        page.replace(
            "</body>",
            "<script>addEventListener('load', () => { const i = [...document.images];"
            " document.body.dataset.loaded = i.filter(x => x.complete && x.naturalWidth > 0)"
            ".length + '/' + i.length; });</script></body>",
        )
    )
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-loaded="4/4"' in dom, dom[:500]
    # A screenshot of the real page that is not blank.
    shot = tmp_path / "report.png"
    subprocess.run(
        flags + ["--window-size=1100,2400", f"--screenshot={shot}", (trained / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert shot.is_file()
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (2400, 1100)
    assert image.std() > 20 and (image < 100).mean() > 0.01  # real content: dark text and charts on light ground
