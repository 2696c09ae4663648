"""The training loop, and the checkpoint that lets a run stop and continue where it was."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from bertsent.errors import BertsentError
from bertsent.modeling.batching import LengthBucketBatchSampler
from bertsent.runtime import Runtime, rng_state, set_rng_state
from bertsent.training.config import TrainConfig
from bertsent.training.microbatch import MicroBatches
from bertsent.training.records import StepLog
from bertsent.training.run_folder import RunFolder, TrainingInterrupted
from bertsent.training.selection import ModelSelection, ValidationSet

if TYPE_CHECKING:
    from accelerate.optimizer import AcceleratedOptimizer
    from transformers import PreTrainedModel


@dataclass
class Position:
    """Where a run is: optimizer steps done, the epoch under way and the steps done in it."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


@dataclass
class Run:
    """Everything the loop works with; `fit` builds it."""

    config: TrainConfig  # resolved: every value concrete
    runtime: Runtime
    model: PreTrainedModel  # the transformers classifier: what is evaluated, checkpointed and saved
    network: torch.nn.Module  # what training runs: the model, maybe on packed batches, maybe compiled
    optimizer: AcceleratedOptimizer  # accelerator.prepare's: it tells when fp16 loss scaling skipped a step
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: LengthBucketBatchSampler
    micro: MicroBatches
    selection: ModelSelection
    validation_set: ValidationSet | None  # the validation data, encoded, to score the model on
    folder: RunFolder
    log: Callable[[str], None]
    records: StepLog | None = None  # made once the run folder is ready
    resume_key: dict = field(default_factory=dict)  # the config as given and the data's fingerprint, for --resume
    position: Position = field(default_factory=Position)
    # called with (step, epoch, metrics) after each evaluation; may raise to end the run (tune prunes so)
    on_evaluation: Callable[[int, float, dict], None] | None = None


def train_loop(run: Run) -> None:
    """Until the last epoch or early stopping: fetch a step's batches, forward and backward, clip and update,
    log, evaluate, checkpoint."""
    config, at = run.config, run.position
    assert config.epochs is not None  # resolved
    run.network.train()
    for epoch in range(at.epoch, config.epochs):
        steps = optimizer_steps(run.sampler, epoch, config.grad_accum)
        batches = sum(map(len, steps))
        for index in range(at.step_in_epoch, len(steps)):
            # -- forward and backward over the step's batches, in micro-batches; gradients summed over processes
            loss = run.micro.step(steps[index])

            # -- clip, update, schedule
            grad_norm = None
            if config.max_grad_norm:
                grad_norm = run.runtime.accelerator.clip_grad_norm_(run.micro.parameters, config.max_grad_norm)
            run.optimizer.step()
            if not run.optimizer.step_was_skipped:  # fp16 skips a step with inf/nan gradients; so does the lr
                run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            end_of_epoch = index + 1 == len(steps)
            at.step += 1
            at.epoch, at.step_in_epoch = (epoch + 1, 0) if end_of_epoch else (epoch, index + 1)

            # -- log: loss and gradient norm stay on the device until the records are read, in groups
            done = epoch + min(1.0, (index + 1) * config.grad_accum / batches)
            lr = float(run.scheduler.get_last_lr()[0])  # a float here: the lr given is one
            assert run.records is not None  # made before the loop starts
            run.records.step(at.step, done, loss, grad_norm, lr, samples=sum(map(len, steps[index])))

            # -- evaluate every `eval_every` steps and at the end of each epoch, keep the best
            stop = False
            if end_of_epoch or (config.eval_every and at.step % config.eval_every == 0):
                stop = evaluate(run, done)

            # -- checkpoint every `checkpoint_every` steps and at the end of each epoch
            if config.checkpoint_every and (end_of_epoch or at.step % config.checkpoint_every == 0):
                save_checkpoint(run)
            if stop:
                run.log(f"Early stopping: no gain in {config.metric} for {config.early_stopping} evaluation(s).")
                return


@contextlib.contextmanager
def interruptible(run: Run):
    """Ctrl-C, and SIGTERM turned into it (as schedulers and `kill` stop a job), end the run as
    TrainingInterrupted: where it was and which checkpoint, if any, continues it. Without a checkpoint the
    partial folder goes: it holds nothing a later run could use."""
    main = threading.current_thread() is threading.main_thread()  # handlers are the main thread's only
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        yield
    except KeyboardInterrupt:
        if run.runtime.is_main and not run.folder.has_checkpoint():  # nothing there could continue the run
            run.folder.discard()
        raise TrainingInterrupted(run.folder.out, run.position.step, run.folder.checkpoint_step()) from None
    finally:
        if main:  # None: a handler not set from Python, taken as the default
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def optimizer_steps(sampler: LengthBucketBatchSampler, epoch: int, grad_accum: int) -> list[list[list[int]]]:
    """An epoch's global batches, `grad_accum` to an optimizer step."""
    sampler.set_epoch(epoch)
    batches = sampler.batches()
    return [batches[i : i + grad_accum] for i in range(0, len(batches), grad_accum)]


def count_steps(sampler: LengthBucketBatchSampler, epochs: int, grad_accum: int) -> int:
    """Optimizer steps in the whole run (a token budget can cut a different number of batches each epoch)."""
    return sum(len(optimizer_steps(sampler, epoch, grad_accum)) for epoch in range(epochs))


def evaluate(run: Run, epoch: float) -> bool:
    """Score the validation data and keep the best model; True when early stopping says stop."""
    if run.validation_set is None:
        return False
    logits = run.validation_set.logits(run.model)
    metrics = run.validation_set.score(logits).metrics
    step = run.position.step
    improved = run.selection.update(run.model, logits, metrics, step, epoch)
    assert run.records is not None  # made before the loop starts
    run.records.evaluation(step, epoch, metrics)
    run.log(
        f"epoch {epoch:.2f}  step {step}  validation accuracy {metrics['accuracy']:.4f}  "
        f"f1 {metrics['f1_macro']:.4f}  loss {metrics['loss']:.4f}{'  (best so far)' if improved else ''}"
    )
    if run.on_evaluation is not None:
        run.on_evaluation(step, epoch, metrics)
    return run.selection.should_stop


def save_checkpoint(run: Run) -> None:
    assert run.records is not None  # made before the loop starts
    run.records.flush()  # the log on disk must reach the checkpoint's step
    rng = run.runtime.gather(rng_state())  # every process's random state: each continues its own streams
    if not run.runtime.is_main:
        return
    scaler = run.runtime.accelerator.scaler
    run.folder.save_checkpoint(
        {
            **run.resume_key,
            "processes": run.runtime.processes,
            "position": asdict(run.position),
            "micro_batch_size": run.micro.size,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "selection": run.selection.state_dict(),
            "rng": rng,
        }
    )


def restore_checkpoint(run: Run, state: dict) -> None:
    try:
        _restore(run, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # shapes or keys of another model or run
        raise BertsentError(
            f"--resume: the checkpoint in {run.folder.checkpoint_dir} does not fit this model and run "
            f"({type(exc).__name__}). Train again without --resume (with --overwrite)."
        ) from None


def _restore(run: Run, state: dict) -> None:
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] is not None and run.runtime.accelerator.scaler is not None:
        run.runtime.accelerator.scaler.load_state_dict(state["scaler"])
    run.selection.load_state_dict(state["selection"])
    run.position = Position(**state["position"])
    run.micro.size = state["micro_batch_size"]
    set_rng_state(state["rng"][run.runtime.rank])
