"""Forward and backward over one optimizer step, in micro-batches that fit in memory, on every process.

A step is a few global batches (gradient accumulation); each process runs its share of each. Every
micro-batch's mean loss is weighted by its share of all the step's sequences, and the gradients are
summed over the processes, so the gradient is the mean over the step's sequences whatever the
micro-batch size and the number of processes (`x * 1.0 == x`: one process, one micro-batch is exact).
With class weights, a micro-batch adds its sum of weighted losses divided by the step's total weight
(every process knows the global batches' labels): the step's loss is torch's CrossEntropyLoss(weight=w)
over all its sequences, again whatever the split.

With `static_shapes` (a compiled network), a micro-batch is padded with filler rows (one pad token, label
IGNORED_LABEL, left out of the loss) to a few row counts (`bucket_rows`), as the collator pads its width.

Nothing here reads a number from the device (that would make the host wait for the GPU every step): the loss
stays a tensor, and out-of-memory is an exception, not a check.

On out-of-memory, on any process, every process drops the step's gradients, halves the micro-batch and
runs the step again: the processes agree first, so none waits forever in a collective for another.
"""

from __future__ import annotations

import torch

from bertsent.errors import BertsentError
from bertsent.modeling.batching import IGNORED_LABEL, as_4d_padding_mask, bucket_rows
from bertsent.runtime import Runtime, free_memory, is_out_of_memory, rng_state, set_rng_state


class MicroBatches:
    """Runs optimizer steps' batches forward and backward, `size` sequences at a time."""

    def __init__(
        self,
        network,
        examples,
        collate,
        sampler,
        runtime: Runtime,
        size: int,
        log,
        class_weights=None,
        static_shapes: bool = False,
        mask_4d: bool = False,
    ):
        self.network = network  # what training runs: the model, maybe packed or compiled
        self.parameters = [p for p in network.parameters() if p.requires_grad]
        self.examples = examples
        self.collate = collate
        self.sampler = sampler
        self.runtime = runtime
        self.size = size
        self.log = log
        self.weights = None if class_weights is None else [float(w) for w in class_weights]
        self._weights_on_device = None if class_weights is None else torch.tensor(self.weights, device=runtime.device)
        self.static_shapes = static_shapes
        self.filler = None
        if static_shapes:
            pad_id = getattr(collate, "pad_token_id", 0)
            self.filler = ([pad_id if pad_id is not None else 0], IGNORED_LABEL)
        self.pin = runtime.device.type == "cuda"  # pinned host memory: the copy to the GPU does not block the host
        self.mask_4d = mask_4d  # padding masks as SDPA takes them: transformers then reads nothing from the GPU

    def step(self, batches: list[list[int]]) -> torch.Tensor:
        """Gradients of the mean loss over `batches` (global batches of example indices) in `.grad`, the same
        on every process; returns that loss as a tensor (reading it would wait for the GPU)."""
        total = sum(len(batch) for batch in batches)
        if self.weights is not None:  # the weighted mean's denominator: the step's labels' weights
            total = sum(self.weights[self.examples[i][1]] for batch in batches for i in batch)
        shares = [self.sampler.shard(batch) for batch in batches]
        if not any(shares):  # fewer sequences than processes: run one with weight 0, to join the all-reduce
            shares = [[batches[0][0]]]
            total = 0
        while True:
            loss, failed = self._attempt(shares, total)
            if not self.runtime.any(failed):
                break
            self._halve("in training")
        assert loss is not None  # the attempt that did not fail
        if self.runtime.processes > 1:
            for p in self.parameters:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.runtime.sum_across([p.grad for p in self.parameters] + [loss])
        return loss

    def probe(self, longest: list[int]) -> None:
        """`--batch-size auto`: from the whole batch down, halve until `size` of the longest sequences fit in
        one forward+backward. The random state is restored: the run is the one a fixed size would give."""
        state = rng_state()
        while True:
            _, failed = self._attempt([longest[len(longest) - self.size :]], self.size)
            if not self.runtime.any(failed):
                break
            self._halve("probing the batch size")
        self._drop_gradients()
        set_rng_state(state)

    def _attempt(self, shares: list[list[int]], total: int) -> tuple[torch.Tensor | None, bool]:
        try:
            return self._forward_backward(shares, total), False
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        return None, True  # returned outside the except block, so the failed batch's tensors are freed first

    def _forward_backward(self, shares: list[list[int]], total: int) -> torch.Tensor:
        loss_sum = None
        for share in shares:
            for start in range(0, len(share), self.size):
                chunk = share[start : start + self.size]
                examples = [self.examples[i] for i in chunk]
                if self.static_shapes:
                    examples += [self.filler] * (bucket_rows(len(chunk), self.size) - len(chunk))
                batch = self.collate(examples)
                if self.mask_4d:
                    batch = as_4d_padding_mask(batch, always=self.static_shapes)
                batch = {k: self._to_device(v) for k, v in batch.items()}
                with self.runtime.autocast():
                    loss = self._loss(batch, len(chunk), total)
                self.runtime.accelerator.backward(loss)
                loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        assert loss_sum is not None  # step gives at least one sequence
        return loss_sum

    def _to_device(self, value):
        if not torch.is_tensor(value):
            return value
        return (value.pin_memory() if self.pin else value).to(self.runtime.device, non_blocking=True)

    def _loss(self, batch: dict, size: int, total: float) -> torch.Tensor:
        """This micro-batch's part of the step's mean loss (weighted by class when there are weights; filler
        rows left out)."""
        if self.weights is None and not self.static_shapes:
            return self.network(**batch).loss * (size / total if total else 0.0)
        labels = batch.pop("labels")
        losses = torch.nn.functional.cross_entropy(
            self.network(**batch).logits.float(),
            labels,
            weight=self._weights_on_device,
            ignore_index=IGNORED_LABEL,
            reduction="sum",
        )
        return losses * (1.0 / total if total else 0.0)

    def _halve(self, why: str) -> None:
        self._drop_gradients()
        free_memory(self.runtime.device)
        if self.size == 1:
            longest = max(self.sampler.lengths)
            raise BertsentError(
                f"out of memory {why} even one sequence at a time (up to {longest} tokens). Lower "
                f"--max-length, try --precision bf16, or pick a smaller model."
            )
        self.size //= 2
        self.log(
            f"Out of memory {why}: micro-batches of {self.size} sequences from now on (the batch and the "
            f"optimization stay the same)."
        )

    def _drop_gradients(self) -> None:
        for p in self.parameters:
            p.grad = None
