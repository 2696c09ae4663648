"""Data-parallel training on 2 CPU processes (gloo), started by torchrun and by accelerate launch, against
one process with the same global batch; a 2-process run that crashes and resumes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import bertsent

from conftest import make_reviews

pytestmark = pytest.mark.slow

CRASH_SCRIPT = '''
"""`bertsent` with AdamW.step failing on its CRASH_AT-th call in every process: a crash mid-run."""
import os, sys, torch
from bertsent.cli import main

original, calls = torch.optim.AdamW.step, [0]

def failing(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == int(os.environ["CRASH_AT"]):
        raise RuntimeError("simulated crash")
    return original(self, *args, **kwargs)

torch.optim.AdamW.step = failing
sys.exit(main(sys.argv[1:]))
'''

OOM_SCRIPT = '''
"""`bertsent` where the process of rank OOM_RANK runs out of memory on batches of more than OOM_ROWS sequences."""
import os, sys, torch
from bertsent.modeling import hub
from bertsent.cli import main

original = hub.load_classifier

def load(*args, **kwargs):
    model = original(*args, **kwargs)
    inner = model.forward

    def forward(*a, **k):
        too_many = len(k["input_ids"]) > int(os.environ["OOM_ROWS"])
        if os.environ["RANK"] == os.environ["OOM_RANK"] and "labels" in k and too_many:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (simulated)")
        return inner(*a, **k)

    model.forward = forward
    return model

hub.load_classifier = load
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def setup(no_dropout_dir, tmp_path_factory):
    """The tiny BERT without dropout (so no random masks differ between runs), and toy data: 97 training rows,
    so the last global batch of each epoch has fewer sequences than there are processes."""
    root = tmp_path_factory.mktemp("distributed")
    shutil.copytree(no_dropout_dir, root / "tiny")
    for name, n, seed in (("train.csv", 97, 1), ("val.csv", 24, 2)):
        texts, labels = make_reviews(n, seed=seed)
        pd.DataFrame({"text": texts, "label": labels}).to_csv(root / name, index=False)
    (root / "crash.py").write_text(CRASH_SCRIPT)
    (root / "oom.py").write_text(OOM_SCRIPT)
    return root


def _train_args(out: str, batch_size: int, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        "train.csv",
        "--eval-data",
        "val.csv",
        "--model",
        "tiny",
        "--batch-size",
        str(batch_size),
        "--lr",
        "5e-3",
        "--quiet",
        "--no-report",
        "--out",
        out,
        *extra,
    ]


def _run(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = (
        os.environ
        | {
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "BERTSENT_CACHE": str(cwd / "cache"),
        }
        | (env or {})
    )
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


def _torchrun(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run(cwd, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args, env=env)


def _accelerate_launch(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    with socket.socket() as probe:  # a free port, so that tests running side by side do not collide
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return _run(
        cwd,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(port),
        *args,
        env=env,
    )


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_the_model_of_one_process_with_the_same_global_batch(setup):
    one = _run(setup, "-m", "bertsent", *_train_args("one", 16, "--epochs", "8"))
    assert one.returncode == 0, one.stderr
    two = _torchrun(setup, "-m", "bertsent", *_train_args("two", 8, "--epochs", "8"))
    assert two.returncode == 0, two.stderr
    # Only the main process prints and writes.
    assert two.stdout.count("Model: two") == 1 and two.stderr.count("Training tiny") == 1
    assert "batch 8 x 2 processes = 16" in two.stderr
    meta = json.loads((setup / "two" / "bertsent.json").read_text())
    assert meta["processes"] == {"count": 2, "global_batch_size": 16}

    # The same optimizer steps with the same learning rates and, within float tolerance, the same losses.
    a, b = _records(setup / "one"), _records(setup / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) == 8 * 7 + 8  # 7 steps an epoch, 8 evaluations
    assert [r.get("lr") for r in a] == [r.get("lr") for r in b]
    assert b[-2]["lr"] == 0.0  # the schedule ends at the last step, not after 1/N of the run
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-4), (x, y)

    # The same final model: validation logits agree to 1e-4, and it learned the task.
    texts = list(pd.read_csv(setup / "val.csv")["text"])
    logits_one = bertsent.load(setup / "one").decision_function(texts)
    logits_two = bertsent.load(setup / "two").decision_function(texts)
    np.testing.assert_allclose(logits_two, logits_one, atol=1e-4)
    assert meta["metrics"]["validation"]["accuracy"] >= 0.9
    assert not [p.name for p in setup.iterdir() if p.name.endswith(".partial")]


def test_out_of_memory_in_one_process_makes_both_halve_and_the_model_stays_the_same(setup):
    plain = _torchrun(setup, "-m", "bertsent", *_train_args("plain", 8, "--epochs", "2"))
    assert plain.returncode == 0, plain.stderr
    # Only the second process runs out of memory, at 8 and at 4 sequences: both go down to 2, step by step.
    oom = _torchrun(setup, "oom.py", *_train_args("oom", 8, "--epochs", "2"), env={"OOM_RANK": "1", "OOM_ROWS": "3"})
    assert oom.returncode == 0, oom.stderr
    backoffs = [line for line in oom.stderr.splitlines() if line.startswith("Out of memory in training")]
    assert [line.split("micro-batches of ")[1].split()[0] for line in backoffs] == ["4", "2"]
    assert json.loads((setup / "oom" / "bertsent.json").read_text())["settings"]["micro_batch_size"] == 2
    a, b = load_file(setup / "plain" / "model.safetensors"), load_file(setup / "oom" / "model.safetensors")
    for key in a:  # the same optimization: only the summation order of the gradients differs
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    assert [r["step"] for r in _records(setup / "plain")] == [r["step"] for r in _records(setup / "oom")]


def test_a_two_process_run_resumes_exactly_and_only_with_two_processes(setup):
    args = ("--epochs", "3", "--checkpoint-every", "4")
    straight = _accelerate_launch(setup, "-m", "bertsent", *_train_args("straight", 8, *args))
    assert straight.returncode == 0, straight.stderr

    crashed = _accelerate_launch(setup, "crash.py", *_train_args("crashed", 8, *args), env={"CRASH_AT": "10"})
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    assert not (setup / "crashed").exists() and (setup / ".crashed.partial" / "checkpoint" / "state.json").exists()

    alone = _run(setup, "-m", "bertsent", *_train_args("crashed", 8, *args, "--resume"))
    assert alone.returncode == 2
    assert "written by 2 process(es), this run has 1" in alone.stderr.strip().splitlines()[-1]

    resumed = _accelerate_launch(setup, "-m", "bertsent", *_train_args("crashed", 8, *args, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from step 8" in resumed.stderr
    a, b = load_file(setup / "straight" / "model.safetensors"), load_file(setup / "crashed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "samples_per_s"} for r in _records(setup / "straight")]
    assert strip == [{k: v for k, v in r.items() if k != "samples_per_s"} for r in _records(setup / "crashed")]


def test_two_processes_agree_on_the_default_model_folder(setup):
    # Without --out the folder is named by the time: the main process's clock names it for both.
    run = _torchrun(setup, "-m", "bertsent", "train", "--data", "train.csv", "--model", "tiny", "--epochs", "1",
                    "--quiet", "--no-report")  # fmt: skip
    assert run.returncode == 0, run.stderr
    folders = [p for p in (setup / "runs").iterdir() if p.name != "latest"]
    assert len(folders) == 1 and (folders[0] / "model.safetensors").exists()
    assert (setup / "runs" / "latest").resolve() == folders[0].resolve()
    assert f"Model: {Path('runs') / folders[0].name}" in run.stdout
