"""Activation store: one fp16 row of shape (n_heads, head_dim) per clip, keyed by what changes the numbers.

On-disk layout of one cache folder (``<root>/<label>-<key[:16]>`` or ``<root>/<key[:16]>``):

- ``key.json``: ``{"key": <sha256>, "fields": {...}}``, the settings the rows depend on.
- ``meta.json``: format version, ``n_heads``, ``head_dim``, ``dtype`` (always float16), ``head_names``.
- ``rows.f16``: the rows, raw little-endian float16, C order, one row after another.
- ``index.tsv``: one line per row, naming its clip, the digests of the inputs it was computed from and
  how it was computed (batch size, clip duration; ``calm.cache.index``); only rows named here exist,
  and for a clip named twice the newest line wins.
- ``cache.lock``: inter-process lock held while writing.

A write appends (and fsyncs) the rows first and the index lines second, under the lock, after
cutting off whatever an interrupted writer left beyond the indexed rows or after the last complete
index line. A crash at any point therefore loses at most the batch in flight, and readers, which
only trust complete index lines, never see a partial row. Reading takes no lock and writes nothing, so
a read-only cache that holds every row a job needs serves it; the lock is taken only to write.

Which rows are served: a folder is keyed by the settings (`key.json`); a row by the digests of the
exact inputs it was computed from (`calm.cache.index`). Content digests of files are remembered in
`file_digests.sqlite` next to the folders (`calm.storage.file_digests`).
"""

from calm.cache.folder import DATA_FILE, INDEX_FILE, KEY_FILE, LOCK_FILE, META_FILE, cache_key
from calm.cache.index import FORMAT_VERSION, REASONS, RowFacts, RowInputs
from calm.cache.rows import RowView
from calm.cache.store import ActivationCache

__all__ = [
    "DATA_FILE",
    "FORMAT_VERSION",
    "INDEX_FILE",
    "KEY_FILE",
    "LOCK_FILE",
    "META_FILE",
    "REASONS",
    "ActivationCache",
    "RowFacts",
    "RowInputs",
    "RowView",
    "cache_key",
]
