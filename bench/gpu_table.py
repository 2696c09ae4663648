"""The table of a bench/gpu_check.sh run: one row per accuracy run (its JSON and its whole-process seconds),
the mean over seeds of each setting, and the scoring variants. Printed, and written as Markdown next to
the results (RESULTS.md takes it as it is).

    python bench/gpu_table.py bench/results/gpu-20261205      # the folder gpu_check.sh wrote into
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def rows(folder: Path) -> list[dict]:
    out = []
    for path in sorted(folder.glob("*.json")):
        figures = json.loads(path.read_text()).get("figures", {})
        if "test_accuracy" not in figures:
            continue
        wall = path.with_suffix(".wall")
        settings = figures.get("settings") or {}
        out.append(
            {
                "run": path.stem,
                "engine": figures.get("engine", "bertsent"),
                "model": Path(str(settings.get("model", "?"))).name,
                "batch": settings.get("batch_size"),
                "lr": settings.get("lr"),
                "epochs": settings.get("epochs"),
                "compile": settings.get("compile") or "-",
                "seed": settings.get("seed"),
                "accuracy": figures["test_accuracy"],
                "loop_s": figures.get("train_loop_s"),
                "evaluate_s": figures.get("evaluate_s"),
                "process_s": float(wall.read_text()) if wall.exists() else None,
                "scoring": figures.get("scoring") or [],
            }
        )
    return out


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(runs: list[dict]) -> str:
    head = "| run | engine | model | batch | lr | epochs | compile | seed | test acc | loop s | scoring s | whole s |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['run']} | {r['engine']} | {r['model']} | {r['batch']} | {r['lr']:g} | {r['epochs']} "
            f"| {r['compile']} | {r['seed']} | {r['accuracy']:.4f} | {_s(r['loop_s'])} | {r['evaluate_s']:.2f} "
            f"| {_s(r['process_s'])} |"
        )
    groups = defaultdict(list)
    for r in runs:
        groups[(r["engine"], r["model"], r["batch"], r["lr"], r["epochs"], r["compile"])].append(r)
    head = "| engine | model | batch | lr | epochs | compile | seeds | mean test acc | accuracies | mean whole s |"
    lines += ["", head, "|---|---|---|---|---|---|---|---|---|---|"]
    for (engine, model, batch, lr, epochs, compiled), group in groups.items():
        accuracies = [r["accuracy"] for r in group]
        walls = [r["process_s"] for r in group if r["process_s"] is not None]
        lines.append(
            f"| {engine} | {model} | {batch} | {lr:g} | {epochs} | {compiled} | {len(group)} | "
            f"{sum(accuracies) / len(accuracies):.4f} | {' / '.join(f'{a:.4f}' for a in accuracies)} | "
            f"{_s(sum(walls) / len(walls) if walls else None)} |"
        )
    scoring = [(r["run"], v) for r in runs for v in r["scoring"]]
    if scoring:
        lines += ["", "| run | precision | batch | reviews | seconds | reviews/s | accuracy | labels as the run's |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for run, v in scoring:
            lines.append(
                f"| {run} | {v['precision']} | {v['batch_size']} | {v['reviews']} | {v['seconds']:.2f} | "
                f"{v['reviews'] / v['seconds']:,.0f} | {v['accuracy']:.4f} | {v['same_labels']:.2%} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:])[0])
    text = table(rows(folder))
    reads = [folder / f"imdb-read-{attempt}.wall" for attempt in ("first", "second")]
    if all(path.exists() for path in reads):
        first, second = (float(path.read_text()) for path in reads)
        text += f"\n\nReading IMDB train, a process each (imports included): {first:.1f} s, then {second:.1f} s "
        text += "from the cache."
    print(text)
    (folder / "gpu-table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
