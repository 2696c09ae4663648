"""Logits of a sequence classifier for token-id lists: the one forward pass that training's validation,
`evaluate` and `predict` share."""

from __future__ import annotations

import numpy as np
import torch

from bertsent.modeling.batching import (
    Collator,
    EncodedDataset,
    LengthBucketBatchSampler,
    as_4d_padding_mask,
    takes_4d_padding_mask,
)


@torch.inference_mode()
def predict_logits(
    model,
    ids: list[list[int]],
    collator: Collator,
    batch_size: int = 64,
    max_tokens: int | None = None,
    device: torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    progress=None,
) -> np.ndarray:
    """Logits for token-id lists, in their order. Batches are length-sorted so little is padded. `progress`,
    when given, is called with each batch's size."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    sampler = LengthBucketBatchSampler([len(x) for x in ids], batch_size, max_tokens, shuffle=False)
    dataset = EncodedDataset(ids)
    order, parts = [], []
    mask_4d = takes_4d_padding_mask(model)  # transformers then waits for no GPU in each forward
    pin = device.type == "cuda"
    for batch_indices in sampler:
        batch = collator([dataset[i] for i in batch_indices])
        if mask_4d:
            batch = as_4d_padding_mask(batch)
        # Pinned on CUDA: the copy does not hold up the host while the GPU works through earlier batches.
        batch = {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            parts.append(model(**batch).logits.float())  # left on the device: copying each batch back would wait
        order += batch_indices
        if progress is not None:
            progress(len(batch_indices))
    model.train(was_training)
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    if parts:
        out[order] = torch.cat(parts).cpu().numpy()
    return out
