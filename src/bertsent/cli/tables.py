"""All the text the command line prints: metric tables, prediction tables, data and model listings."""

from __future__ import annotations

import csv
import io
import json


def format_metrics(metrics: dict) -> str:
    """Headline scores, per-class scores and the confusion matrix."""
    lines = [
        f"examples   {metrics['n']}",
        f"accuracy   {metrics['accuracy']:.4f}",
        f"precision  {metrics['precision_macro']:.4f}  (macro)",
        f"recall     {metrics['recall_macro']:.4f}  (macro)",
        f"f1         {metrics['f1_macro']:.4f}  (macro)",
    ]
    for key in ("roc_auc", "log_loss", "ece"):
        if key in metrics:
            lines.append(f"{key:<10} {metrics[key]:.4f}")
    width = max(8, *(len(n) for n in metrics["labels"]))
    lines += ["", f"{'class':<{width}}  precision  recall  f1      support"]
    for name, s in metrics["per_class"].items():
        lines.append(f"{name:<{width}}  {s['precision']:9.4f}  {s['recall']:6.4f}  {s['f1']:.4f}  {s['support']:7d}")
    lines += [
        "",
        "confusion matrix (rows: true, columns: predicted)",
        " " * width + "  " + "  ".join(f"{n:>{width}}" for n in metrics["labels"]),
    ]
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:>{width}d}" for v in row))
    if metrics.get("baselines"):
        lines += ["", format_baselines(metrics)]
    return "\n".join(lines)


def format_baselines(metrics: dict) -> str:
    """The model's accuracy and macro F1 beside the baselines', then a line for each weak-model warning."""
    from bertsent.evaluation.baselines import baseline_rows

    rows = [("this model", metrics)] + baseline_rows(metrics["baselines"])
    width = max(len(name) for name, _ in rows)
    lines = [f"{'baselines':<{width}}  accuracy  macro F1"]
    lines += [f"{name:<{width}}  {r['accuracy']:8.4f}  {r['f1_macro']:8.4f}" for name, r in rows]
    majority = metrics["baselines"]["majority"]
    lines.append(f"(majority class: from {majority['from']})")
    lines += format_warnings(metrics.get("warnings", []))
    return "\n".join(lines)


def format_warnings(warnings: list[str], prefix: str = "Warning") -> list[str]:
    return [f"{prefix}: {w}" for w in warnings]


def format_seed_summary(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = [f"{'metric':<18} {'mean':>8} {'std':>8}  " + "  ".join(f"{'seed ' + str(s):>9}" for s in seeds)]
    for key, stats in summary["metrics"].items():
        digits = 1 if key == "train_seconds" else 4
        lines.append(
            f"{key:<18} {stats['mean']:>8.{digits}f} {stats['std']:>8.{digits}f}  "
            + "  ".join(f"{v:>9.{digits}f}" for v in stats["values"])
        )
    for run in summary.get("runs", []):
        lines += format_warnings(run.get("warnings", []), f"Warning (seed {run['seed']})")
    return "\n".join(lines)


def format_compare(table: dict) -> str:
    """A row per model, then the baselines' accuracy and macro F1 on the same split, then any warnings."""
    from bertsent.evaluation.baselines import baseline_rows

    baselines = [("baseline: " + name, r) for name, r in baseline_rows(table.get("baselines") or {})]
    width = max([24] + [len(name) for name, _ in baselines])
    header = (
        f"{'model':<{width}} {'accuracy':>8} {'macro F1':>8} {'ECE':>6} {'train s':>8} {'pred/s':>8} "
        f"{'params':>8} {'size MB':>8}"
    )
    lines = [header]
    for r in table["models"]:
        name = r["model"] if len(r["model"]) <= width else "..." + r["model"][3 - width :]
        lines.append(
            f"{name:<{width}} {r['accuracy'] or 0:>8.4f} {r['f1_macro'] or 0:>8.4f} {r['ece'] or 0:>6.3f} "
            f"{r['train_seconds']:>8.1f} {r['predictions_per_s'] or 0:>8.1f} "
            f"{r['parameters'] / 1e6:>7.1f}M {r['size_mb']:>8.1f}"
        )
    lines += [f"{name:<{width}} {r['accuracy']:>8.4f} {r['f1_macro']:>8.4f}" for name, r in baselines]
    for r in table["models"]:
        lines += format_warnings(r.get("warnings", []), f"Warning ({r['model']})")
    return "\n".join(lines)


def format_tune(summary: dict) -> str:
    """`bertsent tune`: a row per trial (the best marked *), then the best settings as a train command."""
    metric = summary["metric"]
    best = summary["best"]
    lines = [
        f"{'trial':>6} {'state':<9} {metric:>9} {'lr':>9} {'epochs':>6} {'batch':>5} {'warmup':>6} {'decay':>6} "
        f"{'dropout':>7} {'seconds':>7}"
    ]
    for r in summary["trials"]:
        shown = r["value"] if r["value"] is not None else r["last_reported"]
        score = "-" if shown is None else f"{shown:.4f}"
        mark = "*" if best and r["trial"] == best["trial"] else " "
        settings = [r.get(k) for k in ("lr", "epochs", "batch_size", "warmup_ratio", "weight_decay")]
        lr, epochs, batch, warmup, decay = ("-" if v is None else f"{v:g}" for v in settings)
        dropout = "-" if r.get("attention_dropout") is None else f"{r['attention_dropout']:g}"
        lines.append(
            f"{r['trial']:>5}{mark} {r['state']:<9} {score:>9} {lr:>9} {epochs:>6} {batch:>5} {warmup:>6} "
            f"{decay:>6} {dropout:>7} {r['seconds'] if r['seconds'] is not None else '-':>7}"
        )
    counts: dict[str, int] = {}
    for r in summary["trials"]:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(
        f"\n{len(summary['ran_here'])} trial(s) run by this process; the study has "
        + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        + f" (pruned: score at the last evaluation; {summary['tokenization']['texts_tokenized']} texts tokenized)."
    )
    if best is None:
        lines.append("No trial finished: no best settings yet.")
        return "\n".join(lines)
    lines.append(f"Best: trial {best['trial']}, validation {metric} {best['value']:.4f}.")
    if best["model_dir"]:
        lines.append(f"Model: {best['model_dir']}")
    else:
        lines.append(f"Its model is in the --out of the process that ran it (host {best['host']}).")
    if summary.get("plot"):
        lines.append(f"Plot: {summary['plot']}")
    lines.append(f"Train it again with:\n  {summary['best_command']}")
    return "\n".join(lines)


def format_audit(issues, top: int = 10) -> str:
    """The first `top` rows of an audit's issues (a DataFrame: row, text, given_label, suggested_label, score)."""
    if issues.empty:
        return "No row was flagged."
    lines = [f"{'row':>7}  {'score':>6}  {'given':<10} {'suggested':<10} text"]
    for r in issues.head(top).itertuples(index=False):
        text = " ".join(str(r.text).split())
        text = text if len(text) <= 70 else text[:67] + "..."
        lines.append(f"{r.row:>7}  {r.score:6.3f}  {r.given_label!s:<10} {r.suggested_label!s:<10} {text}")
    if len(issues) > top:
        lines.append(f"... and {len(issues) - top} more")
    return "\n".join(lines)


def format_predictions(records: list[dict], classes: list[str], fmt: str) -> str:
    """`predict`'s output: a table to read, JSON Lines or CSV."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["text", "label"] + [f"p_{c}" for c in classes])
        for r in records:
            writer.writerow([r["text"], r["label"]] + [r["probs"][c] for c in classes])
        return buffer.getvalue()
    width = max(5, *(len(r["label"]) for r in records))
    lines = [f"{'label':<{width}}  confidence  text"]
    for r in records:
        short = " ".join(r["text"].split())
        short = short if len(short) <= 70 else short[:67] + "..."
        lines.append(f"{r['label']:<{width}}  {max(r['probs'].values()):10.3f}  {short}")
    return "\n".join(lines) + "\n"


def format_data_info(info: dict, model: str) -> str:
    """`bertsent data`: size, splits, labels, length percentiles."""
    lines = [
        f"source    {info['source']}",
        f"rows      {info['rows']}" + (f"  ({info['dropped']} invalid rows skipped)" if info["dropped"] else ""),
    ]
    if info.get("splits"):
        lines.append("splits    " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    mapped = info.get("label_map")
    if mapped:  # --label-map: the counts as read, then what the map made of them
        lines.append(f"label map {mapped['map']}  ({mapped['dropped_rows']} rows dropped)")
        lines.append("before    " + _counts(mapped["before"]))
    if info["labels"]:
        lines.append(("after     " if mapped else "labels    ") + _counts(info["labels"]))
    else:
        lines.append("labels    none (no label column)")
    for key, unit in (("characters", "chars"), ("tokens", f"tokens ({model})")):
        s = info[key]
        lines.append(
            f"{unit:<9} mean {_mean(s['mean'])}, min {s['min']}, median {s['p50']}, p90 {s['p90']}, "
            f"p95 {s['p95']}, p99 {s['p99']}, max {s['max']}"
        )
    over = info["tokens"]["over_max_length"]
    lines.append(f"longer than {over['max_length']} tokens: {over['share']:.1%}")
    if info["tokens"].get("longer"):
        lines[-1] += f" ({info['tokens']['longer']} counted only up to {info['tokens']['counted_up_to']} tokens)"
    return "\n".join(lines)


def _counts(labels: dict) -> str:
    total = sum(labels.values())
    return ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in labels.items())


def _mean(value) -> str:
    return value if isinstance(value, str) else f"{value:.0f}"  # "> N" where a text was counted only up to a cap


def format_export(result: dict) -> str:
    """What `bertsent export` wrote, each file's agreement with PyTorch and, with --data, its accuracy."""
    evaluation = result.get("evaluation") or {}
    accuracy = evaluation.get("accuracy", {})
    lines = [f"{'file':<18} {'MB':>7} {'exporter':<12} {'labels agree':>13} {'max prob diff':>14} {'accuracy':>9}"]
    if "torch" in accuracy:
        lines.append(f"{'(PyTorch)':<18} {'':>7} {'':<12} {'':>13} {'':>14} {accuracy['torch']:>9.4f}")
    for name, entry in result["files"].items():
        parity = entry["parity"]
        shown = f"{accuracy[name]:.4f}" if name in accuracy else "-"
        agree = f"{parity['labels_agree']}/{parity['texts']}"
        lines.append(
            f"{name:<18} {entry['bytes'] / 1e6:>7.1f} {entry['exporter']:<12} {agree:>13} "
            f"{parity['max_prob_diff']:>14.2e} {shown:>9}"
        )
    if result.get("int8_reason"):
        lines.append(result["int8_reason"])
    if evaluation:
        lines.append(f"Accuracy on {evaluation['data']} ({evaluation['n']} rows); temperatures refitted on it.")
    # --backend auto runs int8 when it was kept, else fp32 (backends.resolve_backend)
    picked = "onnx-int8" if "model_int8.onnx" in result["files"] else "onnx"
    lines.append(f"Written to {result['onnx_dir']} in {result['seconds']:.0f} s. --backend auto picks {picked} on CPU.")
    return "\n".join(lines)


def format_models(rows: list[dict]) -> str:
    """`bertsent models`: what is usable offline."""
    lines = []
    for row in rows:
        mark = "yes" if row["available"] else "no "
        lines.append(f"{row['name']:<12} available: {mark}  {row['description']}")
        if row["path"]:
            lines.append(f"{'':<12} {row['path']}")
    lines += [
        "",
        "Also usable: any local Hugging Face model folder (--model /path/to/folder), or a Hub id when online.",
    ]
    return "\n".join(lines)


def format_explanations(explanations: list, top: int = 5, color: bool = False) -> str:
    """`explain`'s text: each text's verdict, the text with its strongest words marked ([+word] towards the
    explained label, [-word] away from it; in colour on a terminal), and those words' scores."""
    blocks = []
    for x in explanations:
        head = f"{x.label} ({x.probs.get(x.label, 0.0):.3f})"
        if x.target != x.label:
            head += f"; words for {x.target}"
        if x.truncated:
            head += f"; explained on the first {x.tokens} tokens"
        head += f"; convergence delta {x.delta:+.3f}"
        order = sorted(range(len(x.words)), key=lambda i: -abs(x.scores[i]))[: max(0, top)]
        strongest = set(order)
        pieces, cursor = [], 0
        for i, (word, score, span) in enumerate(zip(x.words, x.scores, x.offsets)):
            if span is not None:
                pieces.append(x.text[cursor : span[0]])
                cursor = span[1]
            elif i:
                pieces.append(" ")
            pieces.append(_marked(word, score, color) if i in strongest else word)
        if not x.words or x.offsets[-1] is not None:
            pieces.append(x.text[cursor:])
        body = " ".join("".join(pieces).split())
        listed = ", ".join(f"{x.words[i]} {x.scores[i]:+.3f}" for i in order)
        blocks.append(f"{head}\n  {body}\n  strongest: {listed or '-'}")
    return "\n\n".join(blocks) + "\n"


def _marked(word: str, score: float, color: bool) -> str:
    if color:
        return f"\033[1;{32 if score > 0 else 31}m{word}\033[0m"
    return f"[{'+' if score > 0 else '-'}{word}]"


def format_explanations_jsonl(explanations: list) -> str:
    return "".join(json.dumps(x.as_dict(), ensure_ascii=False) + "\n" for x in explanations)
