"""Data: reading labeled text from files, archives and built-in sets; label maps.

- `labels`: Label maps: turn the labels a data source has into the classes wanted, e.g.
- `sources`: Reading labeled text: one reader layer for tables, the IMDB aclImdb layout and built-in data sets.
"""
