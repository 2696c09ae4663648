"""Data: reading labeled text from files, archives and built-in sets; label maps.

- `sources`: Sources of labeled text: what SRC names and which split, read whole (`read_data`) or in chunks
  (`open_table`); validation splits and data statistics.
- `tables`: Table files read a chunk at a time, one reader per format (CSV, TSV, JSON Lines, JSON, Parquet,
  plain lines; compressed too): a whole read is its chunks concatenated.
- `columns`: Which columns hold the text and the label (`pick_columns`, `pick_text_column`), and their values as
  texts and labels.
- `aclimdb`: The IMDB aclImdb layout in a folder or a tar archive, its decoded reviews cached.
- `dataset`: TextDataset, what every reader returns, and the natural order of label names.
- `labels`: Label maps: turn the labels a data source has into the classes wanted, e.g.
"""
