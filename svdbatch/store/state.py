"""The committed state as a lookup: what the resume join and the prune anti-join search, read in pieces.

A piece is the latest row per item of a group of buckets (``commit.bucket_of``: bucket ``b`` is in piece
``b mod pieces``), as ``key``, ``variant`` and ``committed_<column>`` for each of RESUME_COLUMNS, sorted by a 64-bit
hash of (key, variant). Every item lives in one piece, so a piece is read by one task from its own bucket files
(plus the rows of its buckets in commit files not yet merged, and in a table of an earlier layout), and the feed
finds an item's committed row by a binary search in the piece of its bucket: no shuffle, no hash table rebuilt per
batch, and a cost that grows with the log of the table's size, not with its size. A hash match is confirmed on the
key and the variant, so two items whose hashes collide are never taken for each other.

Pieces hold up to ``PIECE_BYTES`` of Parquet each: the reading task's memory is bounded by that, not by the table.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svdbatch import formats, storage
from svdbatch.items.decide import COMMITTED, RESUME_COLUMNS
from svdbatch.items.manifest import ReadParts
from svdbatch.items.metadata import METADATA_SCHEMA, REMOVED
from svdbatch.spec.config import JobSpec
from svdbatch.store.commit import BUCKETS, StateFiles, bucket_of, latest

# Parquet bytes of committed state per piece (~400k items; 1M items are about 78 MB): pieces are read in parallel.
PIECE_BYTES = 32 * 2**20
STATE_COLUMNS = sorted({"key", "variant", "run_id", "source_uri", "finished_at", "status", *RESUME_COLUMNS})
STATE_SCHEMA = pa.schema([METADATA_SCHEMA.field(name) for name in STATE_COLUMNS])
COMMITTED_SCHEMA = pa.schema([METADATA_SCHEMA.field(name).with_name(COMMITTED + name) for name in RESUME_COLUMNS])
HASH = "item_hash"
KEY_HASH = "key_hash"
_BUCKET_FILE = re.compile(r"bucket-(\d+)\.parquet$")
STREAM_ROWS = 100_000  # rows of a commit file or an earlier layout's table filtered to a piece at a time


def piece_count(files: StateFiles) -> int:
    return max(1, min(BUCKETS, -(-files.bytes // PIECE_BYTES)))


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each key (as a string), computed column-wise by polars. Polars' hashes can change between
    its releases: they are never stored, only compared within a run, whose tasks share one environment."""
    import polars as pl

    return pl.from_arrow(pc.cast(keys, pa.string())).hash(seed=0).to_numpy()


def item_hashes(keys: pa.Array | pa.ChunkedArray, variants: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of each (key, variant)."""
    import polars as pl

    key = pl.from_arrow(pc.cast(keys, pa.string()))
    variant = pl.from_arrow(pc.cast(variants, pa.int64()))
    return pl.DataFrame({"key": key, "variant": variant}).hash_rows(seed=0).to_numpy()


def _bucket(name: str) -> int | None:
    found = _BUCKET_FILE.search(name)
    return int(found.group(1)) if found else None


def _state_columns(table: pa.Table) -> pa.Table:
    """Only the state's columns, in today's types; a column added since the file was written reads as null."""
    for field in STATE_SCHEMA:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(STATE_COLUMNS).cast(STATE_SCHEMA)


def _read_bucket(fs, name: str) -> pa.Table:
    with fs.open(name, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        columns = [name for name in STATE_COLUMNS if name in parquet.schema_arrow.names]
        return _state_columns(parquet.read(columns=columns))


def _rows_of_piece(fs, name: str, piece: int, pieces: int) -> list[pa.Table]:
    """The rows of a commit file or an earlier layout's table whose bucket is in the piece, streamed."""
    kept = []
    with fs.open(name, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        columns = [name for name in STATE_COLUMNS if name in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=STREAM_ROWS, columns=columns):
            rows = _state_columns(pa.Table.from_batches([batch]))
            buckets = np.array([bucket_of(key) % pieces for key in rows["key"].to_pylist()], dtype=np.int64)
            kept.append(rows.filter(pa.array(buckets == piece)))
    return kept


def read_piece(output: str, files: StateFiles, piece: int, pieces: int, options: dict[str, Any] | None = None):
    """Piece ``piece`` of ``pieces``: the latest row per item of its buckets, sorted by ``item_hash``."""
    options = options or {}
    fs, _ = storage.filesystem(output, options)
    _, table_1 = storage.filesystem(storage.join(output, formats.TABLE_1), options)
    tables, several = [], bool(files.pending)
    for name in files.tables + files.pending:
        bucket = _bucket(name) if name != table_1 else None
        if bucket is None:  # a commit file, or table 1 (svdbatch/formats.py): any bucket's rows, several per item
            several = several or name == table_1
            tables += storage.retrying(lambda name=name: _rows_of_piece(fs, name, piece, pieces), options)
        elif bucket % pieces == piece:
            tables.append(storage.retrying(lambda name=name: _read_bucket(fs, name), options))
    state = pa.concat_tables(tables) if tables else STATE_SCHEMA.empty_table()
    return index(latest(state) if several else state)


def index(rows: pa.Table) -> pa.Table:
    """Committed rows (one per item) -> the piece: key, variant, their hashes and ``committed_*``, by ``item_hash``."""
    rows = rows.filter(pc.is_valid(rows["key"]))
    columns = {"key": rows["key"], "variant": rows["variant"]}
    columns.update({COMMITTED + name: rows[name] for name in RESUME_COLUMNS})
    columns[KEY_HASH] = pa.array(key_hashes(rows["key"]), pa.uint64())
    columns[HASH] = pa.array(item_hashes(rows["key"], rows["variant"]), pa.uint64())
    table = pa.table(columns)
    return table.take(pc.sort_indices(table[HASH]))


def join(items: pa.Table, pieces: list[pa.Table]) -> pa.Table:
    """Items -> items with the ``committed_*`` columns of their committed row (null where none): the resume join.
    ``pieces`` in order (piece ``n`` holds the buckets ``b`` with ``b mod len(pieces) == n``): each item is looked up
    in its own piece only, and the rows found are gathered with one take."""
    wanted = items.select(["key", "variant"])
    hashes = item_hashes(wanted["key"], wanted["variant"])
    route = _pieces_of(wanted["key"], len(pieces))
    order = np.argsort(route, kind="stable")
    bounds = np.searchsorted(route[order], np.arange(len(pieces) + 1))
    found, positions = [COMMITTED_SCHEMA.empty_table()], np.full(items.num_rows, -1, dtype=np.int64)
    count = 0
    for number, piece in enumerate(pieces):
        mine = order[bounds[number] : bounds[number + 1]]
        rows = _find(wanted.take(pa.array(mine)), hashes[mine], piece) if len(mine) else mine
        hit = rows >= 0
        found.append(piece.select(COMMITTED_SCHEMA.names).take(pa.array(rows[hit])))
        positions[mine[hit]] = count + np.arange(np.count_nonzero(hit))
        count += np.count_nonzero(hit)
    joined = pa.concat_tables(found).take(pa.array(positions, mask=positions < 0))
    for name in COMMITTED_SCHEMA.names:
        items = items.append_column(COMMITTED_SCHEMA.field(name), joined[name])
    return items


def _pieces_of(keys: pa.ChunkedArray, count: int) -> np.ndarray:
    """Each key's piece, its bucket mod ``count``: a SHA-256 per key (~1 us), where searching every piece cost
    ~0.4 us per item and piece. One piece needs none."""
    if count == 1:
        return np.zeros(len(keys), dtype=np.int64)
    return np.fromiter((bucket_of(key) % count for key in keys.to_pylist()), dtype=np.int64, count=len(keys))


def _find(wanted: pa.Table, hashes: np.ndarray, piece: pa.Table) -> np.ndarray:
    """For each wanted (key, variant), its row in the piece, or -1: a binary search on the hash, confirmed on the key
    and the variant (rows whose hash the piece holds more than once are confirmed one by one)."""
    rows = np.full(len(hashes), -1, dtype=np.int64)
    sorted_hashes = piece[HASH].to_numpy()
    if len(sorted_hashes) == 0 or len(hashes) == 0:
        return rows
    left = np.searchsorted(sorted_hashes, hashes, side="left")
    right = np.searchsorted(sorted_hashes, hashes, side="right")
    one = np.flatnonzero(right - left == 1)
    if len(one):
        candidates = pa.array(left[one])
        same = pc.and_(
            pc.equal(piece["key"].take(candidates), wanted["key"].take(pa.array(one))),
            pc.equal(piece["variant"].take(candidates), wanted["variant"].take(pa.array(one))),
        )
        confirmed = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        rows[one[confirmed]] = left[one][confirmed]
    for position in np.flatnonzero(right - left > 1):  # a hash collision in the piece: compare each candidate
        key, variant = wanted["key"][position].as_py(), wanted["variant"][position].as_py()
        for candidate in range(left[position], right[position]):
            if piece["key"][candidate].as_py() == key and piece["variant"][candidate].as_py() == variant:
                rows[position] = candidate
    return rows


def present(spec: JobSpec, parts: list[tuple[str, int, int]]) -> pa.Table:
    """Manifest parts -> the sorted hashes of their keys, one ``key_hash`` column: what the prune anti-join looks
    for (8 bytes per key, where the keys themselves would be the manifest's key column again)."""
    key = spec.manifest.key_column
    table = pa.table({name: [part[index] for part in parts] for index, name in enumerate(["file", "first", "end"])})
    slices = ReadParts(spec, [key])(table)
    return _hash_table(np.concatenate([key_hashes(batch[key]) for batch in slices] or [np.zeros(0, np.uint64)]))


def listed(*present: pa.Table) -> pa.Table:
    """Every manifest part's key hashes in one sorted column: searched by each piece's ``absent``."""
    return _hash_table(np.concatenate([table[KEY_HASH].to_numpy() for table in present] or [np.zeros(0, np.uint64)]))


def _hash_table(hashes: np.ndarray) -> pa.Table:
    return pa.table({KEY_HASH: pa.array(np.sort(hashes), pa.uint64())})


def absent(piece: pa.Table, keys: pa.Table) -> pa.Table:
    """The live rows of a piece (not removed already) whose key is not among the manifest's (``listed``): a hash
    match keeps a row, so a collision can only keep an item, never remove one that is still listed."""
    live = piece.filter(pc.not_equal(piece[COMMITTED + "status"], REMOVED))
    hashes, sorted_keys = live[KEY_HASH].to_numpy(), keys[KEY_HASH].to_numpy()
    if len(sorted_keys) == 0:
        return live.drop_columns([HASH, KEY_HASH])
    at = np.minimum(np.searchsorted(sorted_keys, hashes), len(sorted_keys) - 1)
    return live.filter(pa.array(sorted_keys[at] != hashes)).drop_columns([HASH, KEY_HASH])
