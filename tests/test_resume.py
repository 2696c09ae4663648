"""Resume that tells the truth: settings that differ from the checkpoint's are named and refused (or, when asked,
the checkpoint's are used), an interrupted run prints the command that continues it, damaged checkpoints get one
line, and a `bertsent train` killed with SIGKILL at a random step resumes to the same model, bit for bit."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import bertsent
from bertsent.cli import main

from conftest import make_reviews


def _data(write_csv, n=120, seed=0):
    texts, labels = make_reviews(n, seed=seed)
    return str(write_csv(list(zip(texts, labels)), f"reviews-{n}.csv"))


def _train_args(data, model_dir, out="m", *extra):
    return ["train", "--data", data, "--model", str(model_dir), "--out", out, "--epochs", "2", "--batch-size", "16",
            "--lr", "5e-3", "--checkpoint-every", "2", "--no-report", "--quiet", *extra]  # fmt: skip


def _interrupt_at_step(monkeypatch, n, kind=KeyboardInterrupt):
    """The n-th optimizer step raises `kind` (Ctrl-C, or a crash), before it changes anything."""
    original, calls = torch.optim.AdamW.step, {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise kind()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def _checkpoint_step(out: Path) -> int | None:
    state = out.parent / f".{out.name}.partial" / "checkpoint" / "state.json"
    try:
        return json.loads(state.read_text())["state"]["position"]["step"]
    except (OSError, ValueError, KeyError):
        return None


def _interrupted_run(monkeypatch, capsys, args, at=6) -> str:
    """Run `args` until Ctrl-C in optimizer step `at`; the stderr line it printed."""
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, at)
        assert main(args) == 130
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_ctrl_c_prints_the_command_that_continues_the_run(tiny_model_dir, write_csv, monkeypatch, capsys):
    data = _data(write_csv)
    args = _train_args(data, tiny_model_dir)
    line = _interrupted_run(monkeypatch, capsys, args)
    assert line.startswith("bertsent train: interrupted at step 5 (the last checkpoint is step 4); continue with: ")
    command = shlex.split(line.split("continue with: ")[1])
    assert command[0] == "bertsent" and command[-1] == "--resume" and command[1:-1].count("--out") == 1
    assert main(command[1:]) == 0  # the printed command finishes the run
    assert (Path("m") / "model.safetensors").exists() and _checkpoint_step(Path("m")) is None


def test_ctrl_c_without_a_checkpoint_says_so_and_names_the_flag(tiny_model_dir, write_csv, monkeypatch, capsys):
    args = _train_args(_data(write_csv), tiny_model_dir)
    del args[args.index("--checkpoint-every") : args.index("--checkpoint-every") + 2]
    line = _interrupted_run(monkeypatch, capsys, args, at=3)
    assert line.startswith("bertsent train: interrupted at step 2; no checkpoint was saved")
    assert not list(Path(".").glob(".*partial*"))  # nothing a later run could continue: nothing left behind


def test_ctrl_c_before_the_first_checkpoint_leaves_no_hidden_folder(tiny_model_dir, write_csv, monkeypatch, capsys):
    line = _interrupted_run(monkeypatch, capsys, _train_args(_data(write_csv), tiny_model_dir), at=1)
    assert "no checkpoint was saved" in line
    assert not Path("m").exists() and not Path(".m.partial").exists()
    assert "--checkpoint-every N" in line


def test_the_printed_command_names_the_default_out_folder(tiny_model_dir, write_csv, monkeypatch, capsys):
    args = _train_args(_data(write_csv), tiny_model_dir)
    del args[args.index("--out") : args.index("--out") + 2]  # runs/<model>-<data>-<time>, chosen by the run
    line = _interrupted_run(monkeypatch, capsys, args)
    command = shlex.split(line.split("continue with: ")[1])
    out = command[command.index("--out") + 1]
    assert out.startswith("runs/") and _checkpoint_step(Path(out)) == 4


def test_resume_with_other_settings_names_them_and_refuses(tiny_model_dir, write_csv, monkeypatch, capsys):
    data = _data(write_csv)
    _interrupted_run(monkeypatch, capsys, _train_args(data, tiny_model_dir))
    resumed = [*_train_args(data, tiny_model_dir, "m", "--resume")]
    resumed[resumed.index("--lr") + 1] = "1e-3"
    resumed[resumed.index("--epochs") + 1] = "3"
    assert main(resumed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--epochs: given 3, checkpoint 2" in err[0] and "--lr: given 0.001, checkpoint 0.005" in err[0]
    assert "--resume-with-checkpoint-settings" in err[0] and _checkpoint_step(Path("m")) == 4  # nothing lost

    # Python refuses the same way, through the same check.
    with pytest.raises(bertsent.BertsentError, match="--lr: given 0.001, checkpoint 0.005"):
        bertsent.train(data, out="m", model=str(tiny_model_dir), lr=1e-3, resume=True, progress=False)

    # --checkpoint-every may change: how often a run saves changes nothing it learns.
    same = _train_args(data, tiny_model_dir, "m", "--resume")
    same[same.index("--checkpoint-every") + 1] = "3"
    assert main(same) == 0


def test_plain_resume_takes_every_setting_from_the_checkpoint(tiny_model_dir, write_csv, monkeypatch, capsys):
    data = _data(write_csv)
    args = _train_args(data, tiny_model_dir, "m", "--seed", "7", "--validation-fraction", "0.2")
    _interrupted_run(monkeypatch, capsys, args)
    # Only --out: the seed and the validation share (which split the data) come from the checkpoint too.
    assert main(["train", "--data", data, "--out", "m", "--resume", "--quiet", "--no-report"]) == 0
    settings = json.loads((Path("m") / "bertsent.json").read_text())["settings"]
    assert (settings["seed"], settings["validation_fraction"], settings["epochs"], settings["lr"]) == (7, 0.2, 2, 5e-3)


def test_resume_with_checkpoint_settings_continues_with_them(tiny_model_dir, write_csv, monkeypatch, capsys):
    data = _data(write_csv)
    _interrupted_run(monkeypatch, capsys, _train_args(data, tiny_model_dir))
    other = _train_args(data, tiny_model_dir, "m", "--resume-with-checkpoint-settings")
    other[other.index("--lr") + 1] = "1e-3"
    assert main(other) == 0
    assert json.loads((Path("m") / "bertsent.json").read_text())["settings"]["lr"] == 5e-3

    # In Python: the same keyword.
    _interrupted_run(monkeypatch, capsys, _train_args(data, tiny_model_dir, "p"))
    result = bertsent.train(
        data, out="p", model=str(tiny_model_dir), lr=1e-3, resume_with_checkpoint_settings=True, progress=False,
        log=lambda *_: None, report=False,
    )  # fmt: skip
    assert result.settings["lr"] == 5e-3


def test_resume_needs_an_out_folder(tiny_model_dir, write_csv, capsys):
    assert main(["train", "--data", _data(write_csv), "--model", str(tiny_model_dir), "--resume"]) == 2
    assert "--resume: give --out" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["state.json", "tensors", "tensors-missing", "format", "step", "processes"])
def test_a_damaged_checkpoint_is_one_line(damage, tiny_model_dir, write_csv, monkeypatch, capsys):
    data = _data(write_csv)
    _interrupted_run(monkeypatch, capsys, _train_args(data, tiny_model_dir))
    folder = Path(".m.partial") / "checkpoint"
    tensors = next(folder.glob("*.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    if damage == "state.json":
        (folder / "state.json").write_text('{"format": 4, "tensors": ')
    elif damage == "tensors":
        tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 2])
    elif damage == "tensors-missing":
        tensors.unlink()
    elif damage == "step":  # once printed "Resuming from step abc", then an internal TypeError
        state["state"]["position"]["step"] = "abc"
        (folder / "state.json").write_text(json.dumps(state))
    elif damage == "processes":
        state["state"]["processes"] = None
        (folder / "state.json").write_text(json.dumps(state))
    else:
        (folder / "state.json").write_text(json.dumps(state | {"format": 3}))
    assert main(_train_args(data, tiny_model_dir, "m", "--resume")) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bertsent train: error: --resume: the checkpoint in")
    assert "Resuming" not in captured.out + captured.err
    expected = "another version" if damage == "format" else "damaged or not bertsent's"
    assert expected in err[0]


def test_a_save_killed_midway_leaves_the_previous_checkpoint(tiny_model_dir, write_csv, monkeypatch, capsys):
    """What a SIGKILL inside a save leaves: a new tensors file, written in part or whole, not yet named by
    state.json. The previous checkpoint still loads and resumes; the stray file goes with the next save."""
    data = _data(write_csv)
    _interrupted_run(monkeypatch, capsys, _train_args(data, tiny_model_dir))
    folder = Path(".m.partial") / "checkpoint"
    (folder / "tensors-000000006-deadbeef.safetensors").write_bytes(b"half a fi")
    (folder / ".state.json.0123abcd.tmp").write_text('{"format": 4, "ten')
    assert _checkpoint_step(Path("m")) == 4
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 4)  # steps 5, 6 (a save) and 7 (the epoch's end: a save) run; Ctrl-C in step 8
        assert main(_train_args(data, tiny_model_dir, "m", "--resume")) == 130
    assert sorted(p.suffix for p in folder.iterdir()) == [".json", ".safetensors"]  # the strays are gone
    assert _checkpoint_step(Path("m")) == 7


# -- in a separate process: SIGTERM and SIGKILL ------------------------------------------------------------


def _subprocess_args(data, model_dir, out, epochs="1"):
    # batch 4 and a checkpoint every step: enough steps to stop one mid-run
    return ["train", "--data", data, "--model", str(model_dir), "--out", str(out), "--epochs", epochs,
            "--batch-size", "4", "--lr", "5e-3", "--checkpoint-every", "1", "--no-report", "--quiet",
            "--validation-fraction", "0.1"]  # fmt: skip


def _start(args) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BERTSENT_TEST_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "bertsent", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _wait_for_checkpoint(process: subprocess.Popen, out: Path, step: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _checkpoint_step(out)
        if found is not None and found >= step:
            return found
        if process.poll() is not None:
            raise AssertionError(f"the run ended before checkpoint {step}: {process.communicate()[1][-2000:]}")
        time.sleep(0.01)
    process.kill()
    raise AssertionError(f"no checkpoint {step} within {timeout} s")


def _run(args, timeout=300) -> subprocess.CompletedProcess:
    process = _start(args)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_sigterm_prints_the_command_and_it_resumes(tiny_model_dir, write_csv, tmp_path):
    data = _data(write_csv, 160)
    out = tmp_path / "m"
    process = _start(_subprocess_args(data, tiny_model_dir, out))
    _wait_for_checkpoint(process, out, 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("bertsent train: interrupted at step ") and "; continue with: bertsent train " in line
    command = shlex.split(line.split("continue with: ")[1])
    assert command[-1] == "--resume"
    finished = _run(command[1:])
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Resuming from step" in finished.stderr and (out / "model.safetensors").exists()


@pytest.mark.slow
def test_sigkill_at_a_random_step_resumes_to_the_same_model_bit_for_bit(tiny_model_dir, write_csv, tmp_path):
    from safetensors.torch import load_file

    data = _data(write_csv, 160)
    straight = _run(_subprocess_args(data, tiny_model_dir, tmp_path / "straight", epochs="2"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    steps = 2 * -(-144 // 4)  # 160 rows, 16 held out for validation, batch 4, two epochs
    seed = int(os.environ.get("BERTSENT_KILL_SEED") or random.randrange(10**6))  # a new step each run, reproducible
    kill_at = random.Random(seed).randint(2, steps - 5)

    out = tmp_path / "killed"
    args = _subprocess_args(data, tiny_model_dir, out, epochs="2")
    process = _start(args)
    reached = _wait_for_checkpoint(process, out, kill_at)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL and not out.exists()
    assert _checkpoint_step(out) >= reached

    resumed = _run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming from step {_resumed_step(resumed.stderr)}" in resumed.stderr
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert same, f"killed at step {reached}; BERTSENT_KILL_SEED={seed} repeats it"


def _resumed_step(stderr: str) -> int:
    return int(stderr.split("Resuming from step ")[1].split()[0])
