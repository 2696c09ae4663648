"""Does `bertsent audit` find labels flipped on purpose? Flip a seeded share of the labels of a data set
(default: all of rotten-tomatoes:train), audit it, and print precision and recall of the planted flips
among the top-ranked rows (default: the top 5% of all rows), with the time taken.

    python bench/audit_flips.py --folds 3 --epochs 1 --max-length 64 --json bench/results/cpu-audit-flips.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bertsent.data.sources import TextDataset, read_data
from bertsent.workflows.audit import audit

from common import machine, run_in_scratch, sample


def plant_flips(dataset: TextDataset, share: float, seed: int) -> tuple[TextDataset, np.ndarray]:
    """A copy with round(share x rows) labels changed to another class (seeded); the flipped row numbers."""
    rng = np.random.RandomState(seed)
    flipped = np.sort(rng.choice(len(dataset), round(share * len(dataset)), replace=False))
    classes = sorted(set(dataset.labels))
    labels = list(dataset.labels)
    for i in flipped:
        labels[i] = rng.choice([c for c in classes if c != labels[i]])
    noisy = TextDataset(list(dataset.texts), labels, dataset.groups, f"{dataset.name} ({share:.0%} flipped)")
    return noisy, flipped


def at_top(ranking: np.ndarray, flipped: np.ndarray, k: int) -> dict:
    found = int(np.isin(ranking[:k], flipped).sum())
    return {"k": k, "found": found, "precision": found / max(1, min(k, len(ranking))), "recall": found / len(flipped)}


def main(args, work: Path) -> int:
    dataset = sample(read_data(args.data, default_split="train"), args.rows, args.seed)
    noisy, flipped = plant_flips(dataset, args.flip, args.seed)
    chosen = dict(
        epochs=args.epochs, max_length=args.max_length, model=args.model, validation_fraction=args.validation_fraction
    )
    settings = {k: v for k, v in chosen.items() if v is not None}
    clock = time.perf_counter()
    result = audit(noisy, folds=args.folds, out=work / "audit", seed=args.seed, **settings)
    seconds = time.perf_counter() - clock
    k = math.ceil(args.top * len(noisy))
    flagged = result.issues["row"].to_numpy() - 1
    summary = {
        "machine": machine(),
        "data": noisy.name,
        "rows": len(noisy),
        "flipped": len(flipped),
        "folds": args.folds,
        "settings": settings,
        "seconds": round(seconds, 1),
        "flagged": len(flagged),
        "top_share": args.top,
        # What the audit's own list says: its first k flagged rows (fewer when it flags fewer).
        "flagged_top": at_top(flagged, flipped, k),
        # Every row ranked (flagged first, then by label quality): the top k rows whatever cleanlab flags.
        "ranked_top": at_top(result.ranking(), flipped, k),
        "flagged_all": at_top(flagged, flipped, len(flagged)),
    }
    top = summary["flagged_top"]
    print(
        f"\n{noisy.name}: {len(noisy)} rows, {len(flipped)} flipped; {args.folds} folds, {settings}; "
        f"{seconds / 60:.1f} min on {summary['machine']}\n"
        f"flagged {len(flagged)} rows; top {args.top:.0%} ({k} rows): {top['found']} of the flips, "
        f"precision {top['precision']:.3f}, recall {top['recall']:.3f} "
        f"(whole ranking: recall {summary['ranked_top']['recall']:.3f}; all flagged rows: recall "
        f"{summary['flagged_all']['recall']:.3f})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="rotten-tomatoes", help="labeled data (default rotten-tomatoes:train)")
    parser.add_argument("--rows", type=int, help="audit a seeded sample of N rows (default: all)")
    parser.add_argument("--flip", type=float, default=0.02, help="share of labels flipped (default 0.02)")
    parser.add_argument("--top", type=float, default=0.05, help="share of rows counted as the top (default 0.05)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", default=None, help="default minilm")
    parser.add_argument(
        "--validation-fraction", type=float, help="of each fold's training rows (default 0.1; 0: none, no calibration)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--json", help="also write the figures here")
    sys.exit(run_in_scratch(main, parser.parse_args()))
