"""Using a trained model: the model object, its backends (PyTorch, ONNX), files of any size and shards, ONNX export,
Ray.

- `backends`: Where a trained model's logits come from: PyTorch, or the model exported to ONNX (fp32 or int8) and
  run by ONNX Runtime.
- `export`: `bertsent export DIR`: the trained classifier as ONNX (fp32, and statically quantized int8 on request)
  in DIR/onnx/, for the onnx and onnx-int8 prediction backends.
- `quantize`: Static int8 for an exported ONNX model: SmoothQuant, then ONNX Runtime's static quantization in QDQ
  form.
- `files`: Predictions for a file of any size: read (data.tables), scored and written a chunk at a time, in flat
  memory.
- `predictor`: Predictions from a trained model folder: `bertsent.load(DIR).predict(texts)`.
- `ray`: Scoring a Ray Data dataset: `SentimentPredictor` is the callable class that `Dataset.map_batches` takes.
- `output`: Writing predictions: the output formats, the partial output file and its progress record, the progress
  bar.
- `shards`: `--shard i/n` part files and `merge_parts`, which joins them in row order.
"""
