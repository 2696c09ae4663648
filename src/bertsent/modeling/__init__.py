"""Models and their inputs: finding, loading and saving models and tokenizers, texts to token ids, length-aware
batches, packed batches, the one forward pass.

- `batching`: Length-aware batching: little padding, every example once per epoch, reproducible order.
- `inference`: Logits of a sequence classifier for token-id lists: the one forward pass that training's validation,
  `evaluate` and `predict` share.
- `loading`: Finding, loading and saving models and tokenizers; turning texts into token ids.
- `tiny`: A tiny random BERT with the packaged WordPiece vocabulary: for smoke tests, toy benchmarks and the docs'
  stand-in model.
- `packing`: Unpadded ("packed") batches: a batch's sequences laid end to end in one row, no padding tokens.
"""
