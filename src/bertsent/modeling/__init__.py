"""Models and their inputs: finding, loading and saving models and tokenizers, texts to model inputs (the one
long-text cutter), length-aware batches, packed batches, the one forward pass.

- `batching`: Length-aware batching: little padding, every example once per epoch, reproducible order.
- `inference`: Logits of a sequence classifier for token-id lists: the one forward pass that training's validation,
  `evaluate` and `predict` share.
- `hub`: Finding, loading and saving models and tokenizers: offline aliases, the Hugging Face Hub, model folders
  and their weights (safetensors unless allowed), bertsent.json.
- `tiny`: A tiny random BERT with the packaged WordPiece vocabulary: for smoke tests, toy benchmarks and the docs'
  stand-in model.
- `packing`: Unpadded ("packed") batches: a batch's sequences laid end to end in one row, no padding tokens.
- `tokenizer_file`: A folder's tokenizer.json run by the tokenizers library alone (`TokenizerFile`): ONNX prediction
  tokenizes with it, importing neither transformers nor torch.
- `tokens`: Texts into model inputs: tokenizing, and `model_inputs`, the one place that decides how a long text is
  cut (head, tail, head+tail or windows) for training, its validation, prediction and the server.
"""
