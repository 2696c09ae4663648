"""`fit`: fine-tune a sequence classifier on a TextDataset and write a model folder.

It reads as its steps: the run folder, the device and processes, the examples and labels, the model,
the tokens and the resolved config, the run (batches, micro-batches, optimizer, schedule, validation),
the loop, finishing. The same code runs on a CPU, one GPU, or many processes under torchrun /
accelerate launch (data-parallel; only the main process prints and writes).
"""

from __future__ import annotations

import os
import time
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from bertsent.checks import flag
from bertsent.data.sources import TextDataset, check_trainable, ordered_label_names
from bertsent.errors import BertsentError, DataError
from bertsent.evaluation.baselines import check_baseline
from bertsent.modeling import hub
from bertsent.modeling.batching import (
    Collator,
    EncodedDataset,
    LengthBucketBatchSampler,
    bucket_widths,
    takes_4d_padding_mask,
)
from bertsent.modeling.packing import PackedClassifier, PackedCollator, supports_packing, varlen_kernel
from bertsent.modeling.tokens import model_inputs
from bertsent.modeling.tokens import tokenize as tokenize_texts
from bertsent.runtime import Runtime, set_seed
from bertsent.training.config import RECIPES, TrainConfig, check_class_weights, class_weights_for, imbalance_note
from bertsent.training.finish import TrainResult, finish
from bertsent.training.loop import Run, count_steps, interruptible, restore_checkpoint, train_loop
from bertsent.training.microbatch import MicroBatches
from bertsent.training.records import METRICS_LOG, StepLog, tensorboard_writer_class
from bertsent.training.run_folder import RunFolder
from bertsent.training.selection import ModelSelection, ValidationSet


def fit(
    train: TextDataset,
    validation: TextDataset | None,
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    log=print,
    report: bool = True,
    tensorboard: str | os.PathLike | bool | None = None,
    on_evaluation=None,
    tokenize=None,
    given=None,
    resume_with_checkpoint_settings: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    baseline: str | None = None,
) -> TrainResult:
    """Fine-tune `config.model` on `train`, keep the best evaluation on `validation`, write the model to `out`.

    `report`: also write metrics.json, errors.csv, charts and report.html into the folder.
    `tensorboard`: True (into OUT/tensorboard) or a folder: log the metrics.jsonl scalars there too.
    `on_evaluation(step, epoch, metrics)`: called after each evaluation; an exception it raises ends the run.
    `tokenize`: in place of `tokens.tokenize` (same arguments and result), e.g. a cache shared by runs on one data.
    `resume`: continue from the checkpoint; settings in `given` (by default: those that differ from TrainConfig's
    defaults) must equal the checkpoint's, or `resume_with_checkpoint_settings` continues with the checkpoint's.
    `allow_pickle`, `trust_remote_code`: see `model.load_classifier`.
    `baseline`: "tfidf" also scores TF-IDF + logistic regression beside the model (see `bertsent.evaluation.baselines`).
    """
    started = time.time()
    check_baseline(baseline)
    folder = RunFolder(out, overwrite=overwrite, resume=resume)
    checkpoint = folder.load_checkpoint() if resume else None
    request = config
    if checkpoint is not None:
        request = settle_resume(config, checkpoint["config"], given, resume_with_checkpoint_settings)
    runtime = Runtime(request.device, request.precision)
    log = runtime.main_only(log)
    writer_class = tensorboard_writer_class() if tensorboard else None  # fail before training, not after it
    if checkpoint is not None:
        log(f"Resuming from step {checkpoint['position']['step']} of {folder.out}")

    train, classes = training_examples(train, validation, request)
    if checkpoint is not None:
        check_resumable(checkpoint, train, runtime)
    set_seed(request.seed)
    model, tokenizer = load_model(request, classes, runtime, allow_pickle, trust_remote_code)
    tokenize = tokenize or tokenize_texts
    tokens = tokenize(tokenizer, train.texts)  # once: max_length "auto" is read from these lengths
    lengths = [len(ids) for ids, _ in tokens]
    config = request.resolve(
        parameters=hub.parameter_count(model),
        max_positions=hub.model_max_length(tokenizer, model.config),
        token_lengths=lengths,
        packing_supported=supports_packing(model),
        special_tokens=tokenizer.num_special_tokens_to_add(),
        device_type=runtime.device.type,
    )
    announce(request, config, model, train, validation, classes, lengths, runtime, log)
    label_index = {name: i for i, name in enumerate(classes)}
    assert train.labels is not None  # check_trainable made sure
    train_ids, train_labels, owner = encode_examples(tokens, [label_index[y] for y in train.labels], config)
    del tokens
    if owner is not None:
        log(
            f"Windows: {len(train_ids)} training examples from {len(train)} texts (stride {config.stride}, at most "
            f"{config.max_windows} per text), each with its text's label"
        )
    config = weigh_classes(config, classes, train_labels, train, log)
    assert isinstance(config.batch_size, int) and config.epochs is not None  # resolved
    run = build_run(
        config, runtime, model, tokenizer, train_ids, train_labels, validation, classes, folder, log, tokenize
    )
    run.on_evaluation = on_evaluation
    run.resume_key = {"config": request.as_dict(), "fingerprint": train.fingerprint()}
    if checkpoint is not None:
        restore_checkpoint(run, checkpoint)
    elif config.micro_batch_size == "auto":
        run.micro.probe(sorted(range(len(train_ids)), key=lambda i: len(train_ids[i]))[-config.batch_size :])
        log(
            f"Batch size auto: {config.batch_size}, in micro-batches of {run.micro.size} (the longest "
            f"{run.micro.size} sequences fit in one forward+backward)"
        )
    with interruptible(run):  # Ctrl-C, SIGTERM: TrainingInterrupted says which checkpoint continues the run
        if runtime.is_main:
            folder.prepare(fresh=checkpoint is None)
        run.records = StepLog(
            folder.work / METRICS_LOG,
            enabled=runtime.is_main,
            progress=progress,
            total_steps=count_steps(run.sampler, config.epochs, config.grad_accum),
            first_step=run.position.step,
            writer_class=writer_class,
            tensorboard_dir=_tensorboard_dir(tensorboard, folder, log),
        )
        try:
            train_loop(run)
        finally:  # also when on_evaluation ends the run: the log file and the progress bar are closed
            run.records.close()
        return finish(run, tokenizer, train, validation, started=started, report=report, baseline=baseline)


def training_examples(train: TextDataset, validation: TextDataset | None, config: TrainConfig):
    """The examples to train on (a sample with `max_train_samples`) and the class names, in order."""
    check_trainable(train)
    train = sample_rows(train, config.max_train_samples, config.seed)
    classes = ordered_label_names(train.labels)
    check_class_weights(config.class_weights, classes)  # a wrong count fails before the model loads
    if validation is not None:
        unseen = sorted(set(validation.labels or []) - set(classes))
        if unseen:
            raise DataError(
                f"{validation.name}: labels {', '.join(map(repr, unseen))} do not occur in the training "
                f"data ({', '.join(classes)}). Fix the labels or add such examples to training."
            )
    return train, classes


def sample_rows(train: TextDataset, max_rows: int | None, seed: int) -> TextDataset:
    """--max-train-samples: a seeded random sample of the rows (in their order), or all of them."""
    if not max_rows or len(train) <= max_rows:
        return train
    rng = np.random.RandomState(seed)
    return train.subset(sorted(rng.choice(len(train), max_rows, replace=False)), train.name)


def encode_examples(tokens, labels: list[int], config: TrainConfig):
    """`tokenize`'s output and the texts' labels as training examples (ids, labels, and with windows the text
    each came from, else None): each text cut as prediction cuts it (`model_inputs`), with windows at most
    `max_windows` of a text, spread evenly over it, each with the text's label."""
    assert isinstance(config.max_length, int) and config.truncation is not None  # resolved
    ids, owner = model_inputs(tokens, config.truncation, config.max_length, config.stride, config.max_windows)
    return ids, labels if owner is None else [labels[text] for text in owner], owner


def weigh_classes(config: TrainConfig, classes: list[str], labels: list[int], train: TextDataset, log) -> TrainConfig:
    """The config with its class weights concrete (one per class; "auto" from the training examples' labels),
    said in the run's output, and a note when the classes are imbalanced and nothing accounts for it."""
    note = imbalance_note(train.label_counts(), config)
    if note:
        log(note)
    weights = class_weights_for(config.class_weights, classes, labels)
    if weights is not None:
        shown = ", ".join(f"{name} {w:.3g}" for name, w in zip(classes, weights))
        log(f"Class weights ({'auto: balanced' if config.class_weights == 'auto' else 'given'}): {shown}")
    return replace(config, class_weights=weights)


# Settings a resumed run may change: how often it saves changes nothing in what it learns.
FREE_ON_RESUME = ("checkpoint_every",)


def resume_config(out, config: TrainConfig, given=None, use_checkpoint_settings: bool = False, **folder):
    """The config that continues the checkpointed run in `out` (see `settle_resume`), read from its
    state.json alone: before the data is read and split, which depends on the settings (seed, fraction)."""
    return settle_resume(
        config, RunFolder(out, resume=True, **folder).checkpoint_settings(), given, use_checkpoint_settings
    )


def settle_resume(config: TrainConfig, saved: dict, given=None, use_checkpoint_settings: bool = False) -> TrainConfig:
    """The checkpoint's config (`saved`), when the settings the user gave agree with it: each one named in
    `given` (None: each that differs from TrainConfig's default) must equal the checkpoint's, else a one-line
    refusal lists them; with `use_checkpoint_settings` the checkpoint's win. FREE_ON_RESUME take the given value."""
    try:
        checkpoint = TrainConfig(**saved)
    except (TypeError, BertsentError):  # fields of another version
        raise BertsentError(
            "--resume: the checkpoint's settings are not this version's. Train again without --resume (with "
            "--overwrite)."
        ) from None
    if given is None:
        defaults = TrainConfig()
        given = [f.name for f in fields(TrainConfig) if getattr(config, f.name) != getattr(defaults, f.name)]
    differ = [
        f.name
        for f in fields(TrainConfig)  # in the order of the settings, whatever the order given
        if f.name in given and f.name not in FREE_ON_RESUME and getattr(config, f.name) != getattr(checkpoint, f.name)
    ]
    if differ and not use_checkpoint_settings:
        listed = "; ".join(
            f"{flag(n)}: given {_or_not_set(getattr(config, n))}, checkpoint {_or_not_set(getattr(checkpoint, n))}"
            for n in differ
        )
        raise BertsentError(
            f"--resume: settings differ from the checkpoint's ({listed}). Leave them out (or give the checkpoint's), "
            f"or pass --resume-with-checkpoint-settings to continue with the checkpoint's."
        )
    return replace(checkpoint, **{n: getattr(config, n) for n in FREE_ON_RESUME if n in given})


def _or_not_set(value) -> str:
    return "(not set)" if value is None else str(value)


def check_resumable(checkpoint: dict, train: TextDataset, runtime: Runtime) -> None:
    if checkpoint["fingerprint"] != train.fingerprint():
        raise BertsentError("--resume: the training data differs from the checkpoint's. Pass the same --data.")
    if checkpoint["processes"] != runtime.processes:
        raise BertsentError(
            f"--resume: the checkpoint was written by {checkpoint['processes']} process(es), this "
            f"run has {runtime.processes}. Resume with the same number (the global batch depends "
            f"on it)."
        )


def load_model(
    config: TrainConfig, classes: list[str], runtime: Runtime, allow_pickle: bool = False, trust_remote_code=False
):
    """The tokenizer, and the classifier with a new head for `classes`, on this process's device."""
    tokenizer = hub.load_tokenizer(config.model, trust_remote_code=trust_remote_code)
    model = hub.load_classifier(
        config.model,
        classes,
        attention_dropout=config.attention_dropout,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    hub.set_padding_token(model, tokenizer)
    model.to(runtime.device)
    runtime.broadcast_parameters(model)  # every process starts from the same weights
    return model, tokenizer


def build_run(
    config: TrainConfig,
    runtime: Runtime,
    model,
    tokenizer,
    train_ids: list[list[int]],
    train_labels: list[int],
    validation: TextDataset | None,
    classes: list[str],
    folder: RunFolder,
    log,
    tokenize=tokenize_texts,
) -> Run:
    """Batches, micro-batches, optimizer and schedule, validation and model selection, for a resolved config."""
    assert isinstance(config.max_length, int) and isinstance(config.batch_size, int)  # resolved
    assert config.epochs is not None and config.truncation is not None and config.length_bucketing is not None
    pad_to = config.max_length if config.pad_to_max_length else None
    collator = Collator(
        tokenizer.pad_token_id,
        tokenizer.padding_side,
        pad_to=pad_to,
        pad_to_multiple_of=8 if runtime.device.type == "cuda" and not pad_to else None,
    )
    # Compiled, every new shape compiles again: lengths are padded to a few widths and batches to a few row
    # counts (static shapes: each compiles to its own fixed-size kernels, and CUDA graphs need them).
    train_collator = collator
    if config.compile and not pad_to and not config.packing:
        train_collator = Collator(
            tokenizer.pad_token_id, tokenizer.padding_side, widths=bucket_widths(config.max_length)
        )
    sampler = LengthBucketBatchSampler(
        [len(ids) for ids in train_ids],
        config.batch_size,
        config.max_tokens,
        shuffle=True,
        seed=config.seed,
        sort_by_length=config.length_bucketing,
        num_replicas=runtime.processes,
        rank=runtime.rank,
    )
    network = PackedClassifier(model) if config.packing else model
    if config.compile:
        # Padded batches: static shapes (dynamic=False), few of them (the collator above). Packed rows have a new
        # length every batch: torch's default, a dynamic graph after the second shape.
        mode = None if config.compile == "default" else str(config.compile)  # None: torch's default mode
        network = torch.compile(network, dynamic=None if config.packing else False, mode=mode)
    optimizer = make_optimizer(model, config, runtime.device)
    scheduler = make_schedule(optimizer, config, count_steps(sampler, config.epochs, config.grad_accum))
    optimizer = runtime.accelerator.prepare(optimizer)  # fp16 loss scaling, when on
    # resolved: an int, or "auto" (the batch, until probe halves it)
    micro_size = config.micro_batch_size if isinstance(config.micro_batch_size, int) else config.batch_size
    micro = MicroBatches(
        network,
        EncodedDataset(train_ids, train_labels),
        PackedCollator() if config.packing else train_collator,
        sampler,
        runtime,
        micro_size,
        log,
        class_weights=config.class_weights,
        static_shapes=train_collator.widths is not None,
        mask_4d=not config.packing and takes_4d_padding_mask(model),
    )
    validation_set = None
    if validation is not None:
        tokens = tokenize(tokenizer, validation.texts)
        lengths = [len(ids) for ids, _ in tokens]
        # every window, averaged: as prediction scores a text
        ids, owner = model_inputs(tokens, config.truncation, config.max_length, config.stride)
        assert validation.labels is not None, "the validation data needs labels"
        validation_set = ValidationSet(
            ids, validation.labels, lengths, classes, collator, config.eval_batch_size, runtime, owner=owner
        )
    selection = ModelSelection(config.metric, config.early_stopping, keep_weights=runtime.is_main)
    return Run(
        config=config,
        runtime=runtime,
        model=model,
        network=network,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        micro=micro,
        selection=selection,
        validation_set=validation_set,
        folder=folder,
        log=log,
    )


def make_optimizer(model, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    assert config.lr is not None  # resolved
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps)
    # No weight decay on biases and LayerNorm weights, as BERT was trained.
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # Fused AdamW: one kernel per step instead of a loop over tensors; CUDA and (torch >= 2.4) CPU.
    return torch.optim.AdamW(groups, lr=config.lr, eps=config.adam_eps, fused=device.type in ("cuda", "cpu"))


def make_schedule(optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup and decay to 0 over `total_steps` optimizer steps (the same count on every process)."""
    assert config.warmup_ratio is not None  # resolved
    warmup = int(total_steps * config.warmup_ratio)

    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def announce(
    request: TrainConfig,
    config: TrainConfig,
    model,
    train: TextDataset,
    validation: TextDataset | None,
    classes: list[str],
    lengths: list[int],
    runtime: Runtime,
    log,
) -> None:
    """What is trained on what, with which settings: the lines a user reads before the progress bar."""
    n_parameters = hub.parameter_count(model)
    log(
        f"Training {config.model} ({n_parameters / 1e6:.1f}M parameters) on {train.name}: {len(train)} examples, "
        f"{len(classes)} classes ({', '.join(classes)}); validation: "
        f"{validation.name + f' ({len(validation)})' if validation is not None else 'none'}"
    )
    if request.packing and not config.packing:
        log(
            f"Packing: not available for {type(model).__name__} (BERT-architecture models only); "
            f"training on padded batches."
        )
    assert isinstance(config.max_length, int) and isinstance(config.batch_size, int)  # resolved
    assert config.truncation is not None and config.warmup_ratio is not None and config.lr is not None
    cut = float(np.mean(np.array(lengths) > config.max_length))
    auto = (request.max_length or RECIPES[request.recipe]["max_length"]) == "auto"
    processes = runtime.processes
    log(
        f"Settings ({config.recipe} recipe): epochs {config.epochs}, batch {config.batch_size}"
        f"{f' x {config.grad_accum} accumulated' if config.grad_accum > 1 else ''}"
        f"{f' x {processes} processes = {config.batch_size * config.grad_accum * processes}' if processes > 1 else ''}"
        f", lr {config.lr:g} ({config.optimizer}, {config.schedule}, warmup {config.warmup_ratio:g}), max length "
        f"{config.max_length} ({'auto: 99th percentile, ' if auto else ''}{cut:.1%} of texts "
        f"{'in windows' if config.truncation == 'windows' else 'cut, ' + config.truncation}), "
        f"{'length-bucketed' if config.length_bucketing else 'random'} batches"
        f"{', padded to max length' if config.pad_to_max_length else ''}"
        f"{', packed (no padding)' if config.packing else ''}, device {runtime.device.type}, precision "
        f"{runtime.mixed_precision}, seed {config.seed}"
        f"{'' if config.attention_dropout is None else f', attention dropout {config.attention_dropout:g}'}"
    )
    if config.packing and runtime.device.type == "cuda" and (config.attention_dropout != 0 or varlen_kernel() is None):
        log(
            "Packing: attention runs padded "
            + (
                "while attention dropout is on; --attention-dropout 0 lets it use the flash varlen kernel."
                if varlen_kernel()
                else "(this PyTorch has no varlen attention kernel)."
            )
        )


def _tensorboard_dir(tensorboard, folder: RunFolder, log):
    if not tensorboard:
        return None
    directory = folder.work / "tensorboard" if tensorboard is True else os.path.expanduser(tensorboard)
    log(f"TensorBoard: logging to {folder.out / 'tensorboard' if tensorboard is True else directory}")
    return directory
