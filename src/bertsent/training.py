"""The training loop: fine-tune a sequence classifier on a TextDataset and write a model folder.

Reads top to bottom: settings, tokenize, batch by length, AdamW with linear warmup and decay,
evaluate each epoch, keep the best epoch, calibrate, save atomically. Accelerate picks the device
(CUDA, MPS, CPU) and mixed precision, so the same loop runs on one GPU or many.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import model as models
from .batching import Collator, EncodedDataset, LengthBucketBatchSampler
from .data import TextDataset, check_trainable, ordered_label_names
from .errors import BertsentError, DataError
from .evaluation import compute_metrics, fit_temperature
from .packing import PackedClassifier, PackedCollator, supports_packing, varlen_kernel
from .prediction import pick_device, predict_logits, softmax

CHECKPOINT_DIR = "checkpoint"
METRICS_LOG = "metrics.jsonl"
SMALL_MODEL_PARAMETERS = 40_000_000


@dataclass
class TrainConfig:
    """Every training setting. `recipe` fills the ones the user leaves as None."""

    model: str = models.DEFAULT_MODEL
    recipe: str = "fast"
    epochs: int | None = None
    batch_size: int | str | None = None  # an int, or "auto": the recipe's, in micro-batches that fit in memory
    lr: float | None = None
    max_length: int | str | None = None  # an int or "auto": from the training data's token lengths
    truncation: str | None = None  # head, tail or head+tail
    pad_to_max_length: bool | None = None
    length_bucketing: bool | None = None
    max_tokens: int | None = None  # padded tokens per batch, at most
    grad_accum: int = 1
    optimizer: str | None = None  # adamw or adam
    weight_decay: float | None = None
    adam_eps: float = 1e-8
    warmup_ratio: float | None = None
    schedule: str | None = None  # linear or constant
    max_grad_norm: float | None = None
    seed: int = 42
    max_train_samples: int | None = None
    validation_fraction: float = 0.1
    metric: str = "accuracy"  # picks the best epoch: accuracy, f1_macro or loss
    early_stopping: int | None = None  # stop after this many evaluations without improvement
    eval_every: int | None = None  # steps between evaluations; None: each epoch
    checkpoint_every: int | None = None  # steps between checkpoints (for --resume)
    eval_batch_size: int = 64
    precision: str = "auto"  # auto, fp32, bf16, fp16
    device: str = "auto"
    compile: bool = False
    packing: bool | None = None  # unpadded batches (BERT-architecture models); see packing.py
    attention_dropout: float | None = None  # None: the model's own (0.1 for BERT-family models)
    calibrate: bool = True

    def resolved(self) -> "TrainConfig":
        """A copy with the recipe's values in place of every None."""
        if self.recipe not in RECIPES:
            raise BertsentError(f"--recipe {self.recipe}: unknown recipe. Use one of {', '.join(RECIPES)}.")
        values = asdict(self)
        for key, value in RECIPES[self.recipe].items():
            if values.get(key) is None:
                values[key] = value
        return TrainConfig(**values)


RECIPES = {
    # Our tuned default: little padding, long reviews cut head+tail, lr by model size.
    "fast": dict(epochs=2, batch_size=32, max_length="auto", truncation="head+tail", pad_to_max_length=False,
                 length_bucketing=True, packing=False, optimizer="adamw", weight_decay=0.01, warmup_ratio=0.1,
                 schedule="linear", max_grad_norm=1.0),
    # The tutorial: pad to 512, batch 6, plain Adam at 2e-5 (eps 1e-8), one epoch, no schedule.
    "tutorial": dict(epochs=1, batch_size=6, lr=2e-5, max_length=512, truncation="head", pad_to_max_length=True,
                     length_bucketing=False, packing=False, optimizer="adam", weight_decay=0.0, warmup_ratio=0.0,
                     schedule="constant", max_grad_norm=0.0),
}


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict  # validation metrics of the kept model, calibrated
    best_epoch: float | None
    train_seconds: float
    settings: dict
    history: list = field(default_factory=list)


def auto_lr(parameter_count: int) -> float:
    # Small models (MiniLM) want a larger step than BERT-base-sized ones.
    return 1e-4 if parameter_count < SMALL_MODEL_PARAMETERS else 3e-5


def auto_max_length(lengths: list[int], limit: int) -> int:
    """The 99th percentile of training token lengths, rounded up to a multiple of 32, within the model's limit."""
    p99 = float(np.percentile(lengths, 99)) if lengths else limit
    return int(min(limit, max(32, math.ceil(p99 / 32) * 32)))


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mixed_precision(precision: str, device: torch.device) -> str:
    if precision in ("fp32", "no"):
        return "no"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"  # CPU autocast to bf16 is slower than fp32 on most CPUs


def _optimizer(model, config: TrainConfig, device: torch.device):
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps)
    # No weight decay on biases and LayerNorm weights, as BERT was trained.
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused AdamW: one kernel per step instead of a loop over tensors; CUDA and (torch >= 2.4) CPU.
    return torch.optim.AdamW(groups, lr=config.lr, eps=config.adam_eps, fused=device.type in ("cuda", "cpu"))


def _schedule(optimizer, config: TrainConfig, total_steps: int):
    warmup = int(total_steps * config.warmup_ratio)

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _score(metrics: dict, name: str) -> float:
    return -metrics["loss"] if name == "loss" else metrics[name]


def _work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def fit(train: TextDataset, validation: TextDataset | None, config: TrainConfig, out: str | os.PathLike,
        *, overwrite: bool = False, resume: bool = False, progress: bool = True, log=print,
        report: bool = True, tensorboard: str | os.PathLike | bool | None = None) -> TrainResult:
    """Fine-tune `config.model` on `train`, keep the best epoch on `validation`, write the model to `out`.

    `report`: also write metrics.json, errors.csv, charts and report.html into the folder.
    `tensorboard`: True (into OUT/tensorboard) or a folder: log the metrics.jsonl scalars there too.
    """
    started = time.time()
    config = config.resolved()
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise BertsentError(f"{out}: already exists. Pass --overwrite to replace it, or another --out.")
    work = _work_dir(out)
    checkpoint_path = work / CHECKPOINT_DIR / "state.pt"
    if resume and not checkpoint_path.exists():
        raise BertsentError(f"--resume: no checkpoint for {out} (looked in {work / CHECKPOINT_DIR}). Train "
                            f"with --checkpoint-every N first.")
    checkpoint = torch.load(checkpoint_path, weights_only=False) if resume else None
    summary_writer_class = _summary_writer_class() if tensorboard else None  # fail before training, not after it
    if checkpoint is not None:
        config = TrainConfig(**checkpoint["config"])
        log(f"Resuming from step {checkpoint['step']} (epoch {checkpoint['epoch'] + 1}) of {out}")

    # -- data and labels
    check_trainable(train)
    if config.max_train_samples and len(train) > config.max_train_samples:
        rng = np.random.RandomState(config.seed)
        train = train.subset(sorted(rng.choice(len(train), config.max_train_samples, replace=False)), train.name)
    label_names = ordered_label_names(train.labels)
    label_index = {name: i for i, name in enumerate(label_names)}
    if validation is not None:
        unseen = sorted(set(validation.labels or []) - set(label_names))
        if unseen:
            raise DataError(f"{validation.name}: labels {', '.join(map(repr, unseen))} do not occur in the training "
                            f"data ({', '.join(label_names)}). Fix the labels or add such examples to training.")
    # -- --batch-size auto keeps the recipe's batch (the same optimization) and probes, once the model
    # is loaded, how many of its sequences fit in one forward+backward; they run as micro-batches.
    if config.packing and config.pad_to_max_length:
        raise BertsentError("--packing leaves out all padding, so it cannot also pad to the max length (the tutorial "
                            "recipe pads). Drop --packing, or use --recipe fast.")
    auto_batch = config.batch_size == "auto"
    if auto_batch:
        config.batch_size = RECIPES[config.recipe]["batch_size"]
    if checkpoint is not None and checkpoint["fingerprint"] != train.fingerprint():
        raise BertsentError(f"--resume: the training data differs from the checkpoint's. Pass the same --data.")

    # -- device, model, tokens
    set_seed(config.seed)
    from accelerate import Accelerator

    device = pick_device(config.device)
    accelerator = Accelerator(mixed_precision=_mixed_precision(config.precision, device),
                              cpu=device.type == "cpu")
    device = accelerator.device
    if device.type == "cuda":
        # TF32 matmuls for what runs in fp32: same accuracy in practice, faster; --precision fp32 is strict fp32.
        torch.backends.cuda.matmul.allow_tf32 = config.precision != "fp32"
        torch.backends.cudnn.allow_tf32 = config.precision != "fp32"
    tokenizer = models.load_tokenizer(config.model)
    model = models.load_classifier(config.model, label_names, attention_dropout=config.attention_dropout)
    models.set_padding_token(model, tokenizer)
    if config.packing and not supports_packing(model):
        log(f"Packing: not available for {type(model).__name__} (BERT-architecture models only); "
            f"training on padded batches.")
        config.packing = False
    n_parameters = models.parameter_count(model)
    if config.lr is None:
        config.lr = auto_lr(n_parameters)
    limit = models.model_max_length(tokenizer, model)
    requested = config.max_length
    if requested != "auto" and int(requested) > limit:
        raise BertsentError(f"--max-length {requested}: the model takes at most {limit} tokens.")
    train_tokens = models.tokenize(tokenizer, train.texts)  # once: `auto` picks the length from these
    lengths = [len(ids) for ids, _ in train_tokens]
    config.max_length = auto_max_length(lengths, limit) if requested == "auto" else int(requested)
    train_ids = models.truncate(train_tokens, config.max_length, config.truncation)
    del train_tokens
    truncated = float(np.mean(np.array(lengths) > config.max_length))
    train_labels = [label_index[y] for y in train.labels]
    val_ids = val_labels = None
    if validation is not None:
        val_ids, val_lengths = models.encode(tokenizer, validation.texts, config.max_length, config.truncation,
                                             return_lengths=True)
        val_labels = np.array([label_index[y] for y in validation.labels])

    pad_to = config.max_length if config.pad_to_max_length else None
    collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side, pad_to=pad_to,
                        pad_to_multiple_of=8 if device.type == "cuda" and not pad_to else None)
    train_collator = PackedCollator() if config.packing else collator
    sampler = LengthBucketBatchSampler(lengths=[len(x) for x in train_ids], batch_size=config.batch_size,
                                       max_tokens=config.max_tokens, shuffle=True, seed=config.seed,
                                       sort_by_length=config.length_bucketing,
                                       num_replicas=accelerator.num_processes, rank=accelerator.process_index)
    train_set = EncodedDataset(train_ids, train_labels)
    batches_per_epoch = len(sampler)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs

    settings = asdict(config)
    log(f"Training {config.model} ({n_parameters / 1e6:.1f}M parameters) on {train.name}: {len(train)} examples, "
        f"{len(label_names)} classes ({', '.join(label_names)}); validation: "
        f"{validation.name + f' ({len(validation)})' if validation is not None else 'none'}")
    log(f"Settings ({config.recipe} recipe): epochs {config.epochs}, batch {config.batch_size}"
        f"{f' x {config.grad_accum} accumulated' if config.grad_accum > 1 else ''}, lr {config.lr:g} "
        f"({config.optimizer}, {config.schedule}, warmup {config.warmup_ratio:g}), max length {config.max_length} "
        f"({'auto: 99th percentile, ' if requested == 'auto' else ''}{truncated:.1%} of texts cut, "
        f"{config.truncation}), {'length-bucketed' if config.length_bucketing else 'random'} batches"
        f"{', padded to max length' if pad_to else ''}{', packed (no padding)' if config.packing else ''}, "
        f"device {device.type}, precision {accelerator.mixed_precision}, seed {config.seed}"
        f"{'' if config.attention_dropout is None else f', attention dropout {config.attention_dropout:g}'}")

    if config.packing and device.type == "cuda" and (config.attention_dropout != 0 or varlen_kernel() is None):
        log("Packing: attention runs padded " + ("while attention dropout is on; --attention-dropout 0 lets it use "
            "the flash varlen kernel." if varlen_kernel() else "(this PyTorch has no varlen attention kernel)."))
    optimizer = _optimizer(model, config, device)
    scheduler = _schedule(optimizer, config, total_steps)
    # `classifier` is the transformers model: what is evaluated, checkpointed and saved. `network` is
    # what training runs: the same model, or the same model on packed batches.
    classifier = model
    network = PackedClassifier(classifier) if config.packing else classifier
    network, optimizer, scheduler = accelerator.prepare(network, optimizer, scheduler)
    forward = torch.compile(network) if config.compile else network

    # -- micro-batches. A sampler batch runs as chunks of `memory["micro"]` rows, each loss weighted by
    # its share of the batch, so the gradient is the batch's whatever the chunk size. On out-of-memory the
    # chunk size halves and the batches since the last optimizer step run again.
    memory = {"micro": config.batch_size}

    def backward_batch(indices: list[int]) -> torch.Tensor:
        """Forward and backward over one sampler batch; its loss, as a tensor (reading it would wait for the GPU)."""
        total, size = None, memory["micro"]
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            batch = train_collator([train_set[i] for i in chunk])
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = forward(**batch).loss * (len(chunk) / len(indices)) / config.grad_accum  # x * 1.0 == x exactly
            accelerator.backward(loss)
            total = loss.detach() if total is None else total + loss.detach()
        return total

    def halve_micro_batch(why: str) -> None:
        optimizer.zero_grad(set_to_none=True)
        _free_memory(device)
        if memory["micro"] == 1:
            raise BertsentError(f"out of memory {why} even one sequence at a time (up to {max(sampler.lengths)} "
                                f"tokens). Lower --max-length, try --precision bf16, or pick a smaller model.")
        memory["micro"] //= 2
        log(f"Out of memory {why}: micro-batches of {memory['micro']} sequences from now on "
            f"(batch {config.batch_size} and the optimization stay the same).")

    def rerun_after_oom(window: list[list[int]]) -> torch.Tensor:
        """Halve the micro-batch and run the batches since the last optimizer step again; their loss."""
        while True:
            halve_micro_batch("in training")
            try:
                return sum(backward_batch(indices) for indices in window)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise

    if auto_batch:
        longest = sorted(range(len(train_ids)), key=lambda i: len(train_ids[i]))[-config.batch_size:]
        rng = _rng_state()  # the probe must not change the run: same seed, same model as without it
        while True:
            try:
                backward_batch(longest[len(longest) - memory["micro"]:])
                break
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
            halve_micro_batch("probing the batch size")
        optimizer.zero_grad(set_to_none=True)
        _set_rng_state(rng)
        settings["micro_batch_size"] = memory["micro"]
        log(f"Batch size auto: {config.batch_size}, in micro-batches of {memory['micro']} "
            f"(the longest {memory['micro']} sequences fit in one forward+backward)")

    # -- the work folder: checkpoints and logs land here; renamed to `out` only when complete
    if checkpoint is None and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    step, start_epoch, skip_batches = 0, 0, 0
    best = {"score": -math.inf, "state": None, "epoch": None, "metrics": None, "stale": 0}
    history = []
    if checkpoint is not None:
        classifier.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step, start_epoch, skip_batches = checkpoint["step"], checkpoint["epoch"], checkpoint["batch_in_epoch"]
        best, history = checkpoint["best"], checkpoint["history"]
        _set_rng_state(checkpoint["rng"])
        _truncate_log(work / METRICS_LOG, step)
    metrics_log = open(work / METRICS_LOG, "a")
    # -- optional TensorBoard mirror of metrics.jsonl
    tb_writer = None
    if summary_writer_class is not None and accelerator.is_main_process:
        tb_dir = work / "tensorboard" if tensorboard is True else Path(tensorboard).expanduser()
        tb_writer = summary_writer_class(log_dir=str(tb_dir))
        log(f"TensorBoard: logging to {out / 'tensorboard' if tensorboard is True else tb_dir}")

    def log_record(record: dict) -> None:
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.flush()
        if tb_writer is not None:
            _tensorboard_scalars(tb_writer, record)

    # Step records wait here with their loss and gradient norm still on the device: reading them waits
    # for the GPU, so they are read together, once a second or so, and the CPU queues the next steps
    # meanwhile (on a CPU, every step takes longer than that: each is written at once).
    pending = []
    last_flush = [time.time()]

    def flush_steps() -> None:
        """Read the pending records' loss and gradient norm tensors in one go, then write the records."""
        if not pending:
            return
        on_device = [(record, key) for record in pending for key in ("loss", "grad_norm") if key in record]
        values = torch.stack([record[key].float() for record, key in on_device]).tolist()
        for (record, key), value in zip(on_device, values):
            record[key] = round(value, 5 if key == "loss" else 4)
        elapsed = time.time() - clock  # after the read above, so the GPU has finished these steps
        pending[-1]["samples_per_s"] = round(seen / elapsed, 2) if elapsed > 0 else None
        for record in pending:
            log_record(record)
        bar.set_postfix(epoch=f"{record['epoch']:.2f}", loss=f"{record['loss']:.4f}",
                        samples_s=f"{record['samples_per_s'] or 0:.1f}", refresh=False)
        pending.clear()
        last_flush[0] = time.time()

    def evaluate_now(epoch_float: float) -> bool:
        """Score on validation, keep the best weights; True when early stopping says stop."""
        if val_ids is None:
            return False
        logits = predict_logits(classifier, val_ids, collator, config.eval_batch_size, device=device,
                                autocast_dtype=_autocast_dtype(accelerator))
        metrics = _validation_metrics(logits, val_labels, label_names)
        history.append({"step": step, "epoch": round(epoch_float, 3), **_headline(metrics)})
        log_record({"step": step, "epoch": round(epoch_float, 3), "split": "validation", **_headline(metrics)})
        improved = _score(metrics, config.metric) > best["score"]
        if improved:
            state = classifier.state_dict()
            best.update(score=_score(metrics, config.metric), epoch=round(epoch_float, 3), metrics=metrics, stale=0,
                        state={k: v.detach().to("cpu", copy=True) for k, v in state.items()})
        else:
            best["stale"] += 1
        log(f"epoch {epoch_float:.2f}  step {step}  validation accuracy {metrics['accuracy']:.4f}  "
            f"f1 {metrics['f1_macro']:.4f}  loss {metrics['loss']:.4f}{'  (best so far)' if improved else ''}")
        return bool(config.early_stopping) and best["stale"] >= config.early_stopping

    def save_checkpoint(epoch: int, batch_in_epoch: int) -> None:
        state = {"config": asdict(config), "fingerprint": train.fingerprint(), "step": step, "epoch": epoch,
                 "batch_in_epoch": batch_in_epoch, "model": classifier.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
                 "history": history, "rng": _rng_state()}
        checkpoint_path.parent.mkdir(exist_ok=True)
        temporary = checkpoint_path.with_suffix(".tmp")
        torch.save(state, temporary)
        os.replace(temporary, checkpoint_path)

    # -- the loop
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=not progress or not accelerator.is_main_process,
               unit="step", dynamic_ncols=True, file=sys.stderr)
    network.train()
    seen, clock, stop = 0, time.time(), False
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        epoch_batches = sampler.batches()
        running_loss = 0.0
        window = []  # the batches since the last optimizer step, to run again after an out-of-memory error
        for batch_number, indices in enumerate(epoch_batches):
            if batch_number < skip_batches:
                continue
            window.append(indices)
            try:
                running_loss += backward_batch(indices)
                out_of_memory = False
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the except block, so the failed batch's tensors are freed first
                running_loss = rerun_after_oom(window)
            seen += len(indices)
            last_in_epoch = batch_number == len(epoch_batches) - 1
            if (batch_number + 1) % config.grad_accum and not last_in_epoch:
                continue
            record = {"step": step + 1, "epoch": round(epoch + (batch_number + 1) / len(epoch_batches), 4),
                      "loss": running_loss}  # tensors until flush_steps reads them
            if config.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(network.parameters(), config.max_grad_norm)
                record["grad_norm"] = torch.as_tensor(grad_norm, device=running_loss.device)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window = []
            step += 1
            elapsed = time.time() - clock  # when the step was queued; the last of a group is timed after a sync
            record |= {"lr": scheduler.get_last_lr()[0],
                       "samples_per_s": round(seen / elapsed, 2) if elapsed > 0 else None}
            pending.append(record)
            bar.update(1)
            running_loss = 0.0
            if len(pending) >= 200 or time.time() - last_flush[0] >= 1.0:
                flush_steps()
            if config.eval_every and step % config.eval_every == 0 and not last_in_epoch:
                flush_steps()
                stop = evaluate_now(record["epoch"])
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                flush_steps()
                save_checkpoint(epoch, batch_number + 1)
            if stop:
                break
        flush_steps()
        skip_batches = 0
        if not stop:
            stop = evaluate_now(epoch + 1.0)
        if config.checkpoint_every and not stop:
            save_checkpoint(epoch + 1, 0)
        if stop:
            log(f"Early stopping: no gain in {config.metric} for {config.early_stopping} evaluation(s).")
            break
    bar.close()
    metrics_log.close()
    if tb_writer is not None:
        tb_writer.close()
    train_seconds = time.time() - started

    # -- keep the best epoch, calibrate on validation, write the folder
    final = accelerator.unwrap_model(network).unpack() if config.packing else classifier
    if best["state"] is not None:
        final.load_state_dict(best["state"])
    temperature, metrics = 1.0, None
    if val_ids is not None:
        logits = predict_logits(final, val_ids, collator, config.eval_batch_size, device=device,
                                autocast_dtype=_autocast_dtype(accelerator))
        uncalibrated = _validation_metrics(logits, val_labels, label_names)
        if config.calibrate:
            temperature = fit_temperature(logits, val_labels)
        metrics = _validation_metrics(logits, val_labels, label_names, temperature)
        metrics["ece_uncalibrated"] = uncalibrated["ece"]
        metrics["log_loss_uncalibrated"] = uncalibrated["log_loss"]
    metadata = {
        "bertsent_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": config.model,
        "labels": label_names,
        "max_length": config.max_length,
        "truncation": config.truncation,
        "temperature": temperature,
        "settings": settings | {"lr": config.lr, "max_length": config.max_length},
        "data": {"train": _data_summary(train)} | ({"validation": _data_summary(validation)} if validation else {}),
        "metrics": {"validation": metrics, "best_epoch": best["epoch"], "history": history},
        "parameters": n_parameters,
        "train_seconds": round(train_seconds, 2),
        "device": device.type,
        "versions": _versions(),
    }
    if accelerator.is_main_process:
        shutil.rmtree(work / CHECKPOINT_DIR, ignore_errors=True)
        final.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        (work / models.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        # -- the evaluation report (metrics.json, errors.csv, charts, report.html)
        if report:
            _write_report(work, validation, val_lengths if val_ids is not None else None,
                          logits if val_ids is not None else None, label_names, temperature, metrics, metadata, log)
        _publish(work, out)
    accelerator.wait_for_everyone()
    return TrainResult(out, metrics or {}, best["epoch"], train_seconds, metadata["settings"], history)


# -- report and TensorBoard helpers ----------------------------------------------------

def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise BertsentError("--tensorboard needs TensorBoard: pip install 'bertsent[tensorboard]'") from None
    return SummaryWriter


def _tensorboard_scalars(writer, record: dict) -> None:
    """The scalars of one metrics.jsonl record: train/loss, train/lr, ..., validation/accuracy, ..."""
    prefix = record.get("split", "train")
    for key, value in record.items():
        if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, record["step"])


def _write_report(work: Path, validation, lengths, logits, label_names, temperature, metrics, metadata, log) -> None:
    """The report of a trained model on its validation data; a failure here costs the report, not the model."""
    started = time.time()
    try:
        from .report import write_report

        info = {"model": metadata["base_model"], "validation": (validation.name if validation is not None else None),
                "temperature": float(temperature), "best epoch": metadata["metrics"]["best_epoch"]}
        if logits is None:
            write_report(work, training_log=work / METRICS_LOG, title="Training report", info=info)
            return
        write_report(work, texts=validation.texts, y_true=validation.labels, probs=softmax(logits, temperature),
                     classes=label_names, lengths=lengths,
                     probs_uncalibrated=softmax(logits) if temperature != 1.0 else None, metrics=metrics,
                     training_log=work / METRICS_LOG, title="Training report (validation data)", info=info)
    except Exception as exc:  # noqa: BLE001 - hours of training must not be lost to a chart
        log(f"Warning: could not write the report ({type(exc).__name__}: {exc}); the model is saved.")
    else:
        log(f"Report written in {time.time() - started:.1f} s: report.html")


# -- out-of-memory detection -------------------------------------------------------------

def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS/XPU out-of-memory errors, and the CPU allocator's "can't allocate memory"."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _autocast_dtype(accelerator):
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision)


def _validation_metrics(logits, y_index, label_names, temperature: float = 1.0) -> dict:
    probs = softmax(logits, temperature)
    predicted = [label_names[i] for i in probs.argmax(axis=1)]
    truth = [label_names[i] for i in y_index]
    metrics = compute_metrics(truth, predicted, label_names, probs)
    metrics["loss"] = metrics["log_loss"]
    return metrics


def _headline(metrics: dict) -> dict:
    return {k: round(metrics[k], 5) for k in ("loss", "accuracy", "f1_macro", "ece") if k in metrics}


def _data_summary(dataset: TextDataset) -> dict:
    return {"source": dataset.name, "rows": len(dataset), "fingerprint": dataset.fingerprint(),
            "label_counts": dataset.label_counts(), "dropped": dataset.dropped}


def _versions() -> dict:
    import accelerate
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "bertsent": __version__}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint, so a resumed run's log reads as one run."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _publish(work: Path, out: Path) -> None:
    """Move the finished folder into place; an older folder at `out` goes only once the new one is whole."""
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)
