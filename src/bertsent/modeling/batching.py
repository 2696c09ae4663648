"""Length-aware batching: little padding, every example once per epoch, reproducible order.

Shuffled examples are cut into pools of many batches; each pool is sorted by length and cut into
batches of at most `batch_size` sequences and at most `max_tokens` padded tokens; then all batches
are shuffled together. So a batch holds texts of similar length (little padding) while the order
of batches and their make-up still change every epoch. With several processes the batches are cut
once, the same everywhere, and each process takes its share of every batch.
"""

from __future__ import annotations

import itertools
import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: ONNX prediction pads batches (`Collator.pad`) without torch
    import torch

POOL_BATCHES = 64  # batches' worth of examples sorted together
SMALLEST_WIDTH = 64  # the narrowest of `bucket_widths`
IGNORED_LABEL = -100  # a filler row's label: cross-entropy leaves it out (torch's and transformers' default)


class LengthBucketBatchSampler:
    """Batches of example indices. Deterministic for (seed, epoch), whatever the number of processes.

    `batches()` are the global batches of an epoch, the same on every process: at most `batch_size`
    sequences and `max_tokens` padded tokens per process, so N processes with batch B see the batches
    one process sees with batch N x B. `shard(batch)` is this process's part of one: every N-th
    sequence of it, so each process gets sequences of about the same lengths.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        sort_by_length: bool = True,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.sort_by_length = sort_by_length
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _cut(self, indices: list[int]) -> list[list[int]]:
        most = self.batch_size * self.num_replicas
        batches: list[list[int]] = []
        batch: list[int] = []
        longest = 0
        for i in indices:
            longest_if_added = max(longest, self.lengths[i])
            # The busiest process's share, ceil(n / N) sequences padded to the longest, keeps to the budget.
            share = -(-(len(batch) + 1) // self.num_replicas)
            over_budget = self.max_tokens and batch and longest_if_added * share > self.max_tokens
            if batch and (len(batch) == most or over_budget):
                batches.append(batch)
                batch, longest_if_added = [], self.lengths[i]
            batch.append(i)
            longest = longest_if_added
        if batch:
            batches.append(batch)
        return batches

    def batches(self) -> list[list[int]]:
        """All global batches of this epoch, in order."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches = []
        if self.sort_by_length:
            pool = self.batch_size * self.num_replicas * POOL_BATCHES
            for start in range(0, len(order), pool):
                chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
                batches += self._cut(chunk)
        else:
            batches = self._cut(order)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def shard(self, batch: list[int]) -> list[int]:
        """This process's part of a global batch (empty when the batch has fewer sequences than processes)."""
        return batch[self.rank :: self.num_replicas]

    def __iter__(self):
        return (self.shard(batch) for batch in self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class Collator:
    """Pads a batch of token-id lists to its longest member (or a fixed length) and adds the labels."""

    def __init__(
        self,
        pad_token_id: int,
        padding_side: str = "right",
        pad_to: int | None = None,
        pad_to_multiple_of: int | None = None,
        widths: tuple[int, ...] | None = None,
    ):
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.pad_to = pad_to
        self.pad_to_multiple_of = pad_to_multiple_of
        self.widths = widths  # pad to the narrowest of these that fits (a compiled model sees only these)

    def __call__(self, examples: list[tuple[list[int], int | None]]) -> dict[str, torch.Tensor]:
        import torch

        batch = {name: torch.from_numpy(array) for name, array in self.pad(examples).items()}
        if examples[0][1] is not None:
            batch["labels"] = torch.tensor([label for _, label in examples], dtype=torch.long)
        return batch

    def pad(self, examples: list[tuple[list[int], int | None]]) -> dict[str, np.ndarray]:
        """The padded input_ids and attention_mask as int64 arrays (labels left out): what ONNX Runtime takes."""
        # One flat array and one masked assignment, not a tensor per row: ~15x faster, which matters when a
        # GPU step takes a few milliseconds.
        lengths, flat = flat_token_ids(examples)
        width = self.pad_to or int(lengths.max())
        if self.widths:
            width = next((w for w in self.widths if w >= width), width)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        columns = np.arange(width)[None, :]
        if self.padding_side == "left":
            mask = columns >= (width - lengths)[:, None]
        else:
            mask = columns < lengths[:, None]
        input_ids = np.full((len(examples), width), self.pad_token_id, dtype=np.int64)
        input_ids[mask] = flat  # row-major order: each row's tokens in order, wherever its padding is
        return {"input_ids": input_ids, "attention_mask": mask.astype(np.int64)}


def bucket_widths(max_length: int) -> tuple[int, ...]:
    """The widths a batch is padded to when shapes must be few (a compiled model compiles once per shape):
    powers of two from SMALLEST_WIDTH, and `max_length`. At most 5 up to 512 tokens; a batch pads at most to
    twice its longest sequence, and length-bucketed batches (of similar lengths) about 1.4x on average."""
    widths, width = [], SMALLEST_WIDTH
    while width < max_length:
        widths.append(width)
        width *= 2
    return (*widths, max_length)


def bucket_rows(rows: int, most: int) -> int:
    """The rows a batch of `rows` sequences is padded to with filler rows: the next power of two, at most `most`
    (so a run sees at most log2(most) + 1 row counts, usually two: full batches and an epoch's last)."""
    return min(most, 1 << (rows - 1).bit_length())


def takes_4d_padding_mask(model) -> bool:
    """True for BERT classifiers on PyTorch's SDPA attention. Given the usual 2-D padding mask, transformers
    first asks whether any position is masked (`mask.all()`): a read from the GPU, so the host waits for it to
    catch up, once per forward. Given (batch, 1, 1, length) booleans (`as_4d_padding_mask`), it uses them as
    they are, the same mask SDPA would get."""
    from transformers import BertForSequenceClassification

    config = getattr(model, "config", None)
    return (
        isinstance(model, BertForSequenceClassification)
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and not model.config.is_decoder
    )


def as_4d_padding_mask(batch: dict, always: bool = False) -> dict:
    """The batch with its padding mask as SDPA takes it, or none when nothing is padded (known here, on the
    host: then attention runs without a mask, as transformers would choose after its check). `always`: keep
    the mask even then (a compiled model would otherwise compile a second graph without it)."""
    mask = batch["attention_mask"]
    if not always and bool(mask.all()):  # a CPU tensor, before the copy to the device
        del batch["attention_mask"]
    else:
        batch["attention_mask"] = mask[:, None, None, :].bool()
    return batch


def flat_token_ids(examples: list[tuple[list[int], int | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Each example's length, and all token ids end to end, as int64 arrays."""
    lengths = np.fromiter((len(ids) for ids, _ in examples), dtype=np.int64, count=len(examples))
    flat = np.fromiter(
        itertools.chain.from_iterable(ids for ids, _ in examples), dtype=np.int64, count=int(lengths.sum())
    )
    return lengths, flat


class EncodedDataset:
    """Token ids with integer labels (or None), indexed as a map-style dataset."""

    def __init__(self, ids: list[list[int]], labels: list[int] | None = None):
        self.ids = ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return self.ids[index], (self.labels[index] if self.labels is not None else None)
