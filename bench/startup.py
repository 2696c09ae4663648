"""How long bertsent takes to start, against `python -c "import torch"` run in the same call.

Each command is timed as a whole process (start-up included), in pairs with the yardstick: A, B, A, B, ...,
after a warm-up of each, so that a machine whose speed drifts moves both. Printed per command: wall and CPU
(user + system) seconds as min / median, the median of the pair-by-pair ratios A/B (issue 17's targets:
`bertsent --help` at most 0.2x, a one-sentence predict with ONNX at most 1x), and whether the command imports
torch at all (one more run, with Python's -X importtime).

    python bench/startup.py                       # --help, --version, python -c "import bertsent"
    python bench/startup.py --predict             # and a one-sentence predict (trains a small model first)
    python bench/startup.py --predict --onnx      # and the same with the ONNX backend, and with auto (exports first)
    python bench/startup.py --predict --model-dir runs/x   # a model folder of your own
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

YARDSTICK = [sys.executable, "-c", "import torch"]
SENTENCE = "This is a really good movie. I loved it and will watch again"


def bertsent_command() -> list[str]:
    """The installed console script when it is this interpreter's, else `python -m bertsent`."""
    script = Path(sys.executable).parent / "bertsent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bertsent"]


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one whole run; a failed run stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports_torch(command: list[str]) -> bool:
    """Whether one run of `command` imports torch (PYTHONPROFILEIMPORTTIME: -X importtime for any Python process)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    # a line per module: "import time: self | cumulative | <indentation by depth>name"
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def pairs(label: str, command: list[str], runs: int) -> dict:
    """`runs` pairs (command, yardstick) after one warm-up of each; min/median and the median pair ratio."""
    run_once(command), run_once(YARDSTICK)
    a, b = [], []
    for _ in range(runs):
        a.append(run_once(command))
        b.append(run_once(YARDSTICK))

    def stats(values):
        return {"min": round(min(values), 3), "median": round(statistics.median(values), 3)}

    return {
        "command": label,
        "wall": stats([w for w, _ in a]),
        "cpu": stats([c for _, c in a]),
        "torch_wall": stats([w for w, _ in b]),
        "torch_cpu": stats([c for _, c in b]),
        "ratio_wall": round(statistics.median(x[0] / y[0] for x, y in zip(a, b)), 3),
        "ratio_cpu": round(statistics.median(x[1] / y[1] for x, y in zip(a, b)), 3),
        "imports_torch": imports_torch(command),
    }


def small_model(workdir: Path, onnx: bool) -> Path:
    """A model folder to predict with: the packaged MiniLM trained for a few steps (and exported, for --onnx)."""
    folder = workdir / "minilm-startup"
    if not (folder / "bertsent.json").exists():
        print("training a small model to predict with (once) ...", file=sys.stderr, flush=True)
        train = ["train", "--max-train-samples", "64", "--epochs", "1", "--max-length", "32", "--no-report"]
        subprocess.run([*bertsent_command(), *train, "--quiet", "--overwrite", "--out", str(folder)], check=True)
    if onnx and not (folder / "onnx" / "model.onnx").exists():
        print("exporting it to ONNX (once) ...", file=sys.stderr, flush=True)
        subprocess.run([*bertsent_command(), "export", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="pairs per command (default 5)")
    parser.add_argument("--predict", action="store_true", help="also a one-sentence `bertsent predict`")
    parser.add_argument("--onnx", action="store_true", help="with --predict: also with --backend onnx")
    parser.add_argument("--model-dir", type=Path, help="the model folder to predict with (default: trained here)")
    parser.add_argument("--workdir", type=Path, help="where the small model is kept (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    bertsent = bertsent_command()
    commands = {
        "bertsent --help": [*bertsent, "--help"],
        "bertsent --version": [*bertsent, "--version"],
        'python -c "import bertsent"': [sys.executable, "-c", "import bertsent"],
    }
    scratch = None
    if args.predict:
        if args.model_dir is None and args.workdir is None:
            scratch = Path(tempfile.mkdtemp(prefix="bertsent-startup-"))
        folder = args.model_dir or small_model(args.workdir or scratch, args.onnx)
        for backend in ("torch", "onnx", "auto") if args.onnx else ("torch",):
            flags = [] if backend == "auto" else ["--backend", backend]  # auto: the export, on a CPU
            label = " ".join(["bertsent predict DIR", *flags, '"..."'])
            commands[label] = [*bertsent, "predict", str(folder), *flags, SENTENCE]
    try:
        rows = []
        print(
            f"{'command':<44} {'wall s (min/med)':>17} {'cpu s (min/med)':>16} {'vs import torch (wall/cpu)':>27} "
            "imports torch"
        )
        for label, command in commands.items():
            row = pairs(label, command, args.runs)
            rows.append(row)
            print(
                f"{label:<44} {row['wall']['min']:>7.3f} / {row['wall']['median']:<7.3f} "
                f"{row['cpu']['min']:>6.3f} / {row['cpu']['median']:<7.3f} "
                f"{row['ratio_wall']:>12.2f}x / {row['ratio_cpu']:.2f}x   {'yes' if row['imports_torch'] else 'no'}",
                flush=True,
            )
        torch_wall = statistics.median(r["torch_wall"]["median"] for r in rows)
        torch_cpu = statistics.median(r["torch_cpu"]["median"] for r in rows)
        yardstick = 'python -c "import torch" (median)'
        print(f"{yardstick:<44} {torch_wall:>17.3f} {torch_cpu:>16.3f}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
        if args.json:
            args.json.write_text(json.dumps({"rows": rows, "loadavg": os.getloadavg()}, indent=2) + "\n")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
