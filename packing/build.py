"""Texts to shards for one rank: tokenize in batches, add separators by id, pack, write; then one index.

`ShardBuilder` is the whole job of one rank (the datatrove step in `pipelines.steps` wraps it; `build_shards`
runs it in one process). Each rank leaves its shards plus a small manifest in `_ranks/`; `merge_ranks` reads
the manifests of all ranks and writes `index.json` last, so a folder with an index is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from packing.format import (
    DEFAULT_MAX_SHARD_BYTES,
    DTYPES,
    INDEX_FILE,
    ShardFormatError,
    ShardWriter,
    atomic_write_text,
    check_vocab_fits,
    read_index,
    rows_per_batch,
    write_index,
)
from packing.packer import LongPolicy, Packer, PackStats, default_pool_tokens

RANKS_DIR = "_ranks"
TAILS_DIR = "_tails"
ENCODE_BATCH = 256  # texts per encode call: big enough for the native batch path, small enough to stream
logger = logging.getLogger(__name__)
_SHARD_RE = re.compile(r"^shard-(\d{5})-(\d{5})\.arrow$")


@dataclass(frozen=True)
class PackOptions:
    """How documents become rows. `eos_id`/`bos_id` are added by id around every document.

    pad_id defaults to eos_id (or 0 without one): padding is never a real token for the loss, because
    `doc_lengths` says where the real tokens end.
    """

    seq_len: int
    eos_id: int | None
    bos_id: int | None = None
    pad_id: int | None = None
    pool_tokens: int | None = None
    on_long: LongPolicy = "split"
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    dtype: str = "uint32"

    def __post_init__(self) -> None:
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be positive, got {self.seq_len}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.on_long not in ("split", "drop"):
            raise ValueError(f"on_long must be 'split' or 'drop', got {self.on_long!r}")
        for name in ("eos_id", "bos_id", "pad_id"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def resolved_pad_id(self) -> int:
        if self.pad_id is not None:
            return self.pad_id
        return self.eos_id if self.eos_id is not None else 0

    @property
    def resolved_pool_tokens(self) -> int:
        return default_pool_tokens(self.seq_len) if self.pool_tokens is None else self.pool_tokens

    def describe(self) -> dict[str, Any]:
        """What the index records about packing (everything that changes the rows)."""
        return {
            "pool_tokens": self.resolved_pool_tokens,
            "on_long": self.on_long,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
            "pad_id": self.resolved_pad_id,
            "rows_per_batch": rows_per_batch(self.seq_len, self.dtype),
            "max_shard_bytes": self.max_shard_bytes,
        }


def tokenizer_entry(tokenizer: Any, options: PackOptions) -> dict[str, Any]:
    """The `tokenizer` field of index.json."""
    return {
        "name": tokenizer.name,
        "fingerprint": tokenizer.fingerprint,
        "vocab_size": int(tokenizer.vocab_size),
        "eos_id": options.eos_id,
        "bos_id": options.bos_id,
        "pad_id": options.resolved_pad_id,
    }


def resolve_options(
    tokenizer: Any,
    *,
    seq_len: int,
    eos_id: int | None = None,
    bos_id: int | None = None,
    use_eos: bool = True,
    use_bos: bool = False,
    **kwargs: Any,
) -> PackOptions:
    """Options with separator ids taken from explicit ids, else from the tokenizer as it was loaded.

    The tokenizer's `eos_id`/`bos_id` are those of the tokens named when loading it (`eos_token=`), or of its
    tokenizer_config.json; without any, a document separator must be configured or refused (`use_eos=False`).
    """
    if use_eos and eos_id is None:
        eos_id = tokenizer.eos_id
        if eos_id is None:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} has no EOS token configured: name one (--eos '</s>' or --eos-id N) "
                "or pack without a separator (--no-eos)"
            )
    if use_bos and bos_id is None:
        bos_id = tokenizer.bos_id
        if bos_id is None:
            raise ValueError(
                f"tokenizer {tokenizer.name!r} has no BOS token configured: name one (--bos / --bos-id)"
            )
    options = PackOptions(
        seq_len=seq_len, eos_id=eos_id if use_eos else None, bos_id=bos_id if use_bos else None, **kwargs
    )
    vocab = int(tokenizer.vocab_size)
    check_vocab_fits(vocab, options.dtype, what=f"tokenizer {tokenizer.name!r}")
    for name in ("eos_id", "bos_id"):
        value = getattr(options, name)
        if value is not None and value >= vocab:
            raise ValueError(f"{name} {value} is outside the vocabulary of {tokenizer.name!r} ({vocab} ids)")
    return options


@dataclass
class RankResult:
    """What one rank wrote: its shard entries and its counts."""

    rank: int
    shards: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


def _options_key(tokenizer: dict[str, Any], options: PackOptions) -> str:
    blob = json.dumps({"tokenizer": tokenizer, "options": asdict(options)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class ShardBuilder:
    """One rank's texts to shards. Call `add_texts` (or `add_token_arrays`) any number of times, then `close`."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        tokenizer: Any,
        options: PackOptions,
        *,
        rank: int = 0,
        tail_tokens: int = 0,
    ) -> None:
        self.out_dir = Path(out_dir)
        # up to this many tokens of the emptiest last rows go to `_tails/` for merge_ranks to pack together
        self.tail_tokens = tail_tokens
        self.tokenizer = tokenizer
        self.options = options
        self.rank = rank
        check_vocab_fits(int(tokenizer.vocab_size), options.dtype, what=f"tokenizer {tokenizer.name!r}")
        self._id_limit = int(np.iinfo(DTYPES[options.dtype]).max)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        self.writer = ShardWriter(
            self.out_dir,
            seq_len=options.seq_len,
            pad_id=options.resolved_pad_id,
            rank=rank,
            max_shard_bytes=options.max_shard_bytes,
            dtype=options.dtype,
        )
        self.packer = Packer(
            self.writer, options.seq_len, pool_tokens=options.resolved_pool_tokens, on_long=options.on_long
        )
        self._prefix = (
            np.array([options.bos_id], dtype=np.uint32)
            if options.bos_id is not None
            else np.empty(0, np.uint32)
        )
        self._suffix = (
            np.array([options.eos_id], dtype=np.uint32)
            if options.eos_id is not None
            else np.empty(0, np.uint32)
        )
        self._closed = False

    def _remove_stale(self) -> None:
        """Earlier output of this rank would otherwise sit beside the new one; no index may claim the folder."""
        (self.out_dir / INDEX_FILE).unlink(missing_ok=True)
        for path in self.out_dir.iterdir():
            match = _SHARD_RE.match(path.name)
            if match and int(match.group(1)) == self.rank:
                path.unlink()
        (self.out_dir / RANKS_DIR / f"rank-{self.rank:05d}.json").unlink(missing_ok=True)
        (self.out_dir / TAILS_DIR / f"tail-{self.rank:05d}.arrow").unlink(missing_ok=True)

    def add_texts(self, texts: Sequence[str], doc_ids: Sequence[str] | None = None) -> None:
        """Encode texts in batches (special-token strings stay plain text) and pack them with separators."""
        if doc_ids is not None and len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} doc_ids for {len(texts)} texts")
        for start in range(0, len(texts), ENCODE_BATCH):
            chunk = texts[start : start + ENCODE_BATCH]
            encoded = self.tokenizer.encode_batch(list(chunk))
            ids = None if doc_ids is None else doc_ids[start : start + ENCODE_BATCH]
            self.add_token_arrays(encoded, ids)

    def add_token_arrays(self, encoded: Sequence[np.ndarray], doc_ids: Sequence[str] | None = None) -> None:
        """Add already-encoded documents (ids of the text alone). Empty ones are counted, never written."""
        if not encoded:
            return
        pieces: list[np.ndarray] = []
        sizes = np.zeros(len(encoded), dtype=np.int64)
        extra = len(self._prefix) + len(self._suffix)
        for i, ids in enumerate(encoded):
            if len(ids):
                pieces.extend((self._prefix, ids, self._suffix))
                sizes[i] = len(ids) + extra
        if not pieces:
            self.packer.add_batch([np.empty(0, np.uint32)] * len(encoded), doc_ids)
            return
        flat = np.concatenate(pieces).astype(np.uint32, copy=False)  # one copy for the whole batch
        if flat.size and int(flat.max()) > self._id_limit:
            bad = next(i for i, ids in enumerate(encoded) if len(ids) and int(np.max(ids)) > self._id_limit)
            name = doc_ids[bad] if doc_ids is not None else f"#{bad} of the batch"
            raise ValueError(
                f"document {name}: token id {int(np.max(encoded[bad]))} does not fit {self.options.dtype}"
            )
        bounds = np.cumsum(sizes)
        documents = np.split(flat, bounds[:-1])
        self.packer.add_batch(documents, doc_ids)

    def close(self) -> RankResult:
        """Pack what is pooled, finish the shards, write this rank's manifest."""
        tail = self.packer.finish_with_tail(self.tail_tokens) if self.tail_tokens > 0 else []
        stats = self.packer.finish()
        shards = self.writer.close()
        self._closed = True
        result = RankResult(rank=self.rank, shards=shards, stats=stats.as_dict())
        tail_entry = write_tail(self.out_dir, self.rank, tail) if tail else None
        manifest = {
            "rank": self.rank,
            "key": _options_key(tokenizer_entry(self.tokenizer, self.options), self.options),
            "tokenizer": tokenizer_entry(self.tokenizer, self.options),
            "seq_len": self.options.seq_len,
            "dtype": self.options.dtype,
            "packing": self.options.describe(),
            "shards": shards,
            "stats": result.stats,
            "tail": tail_entry,
        }
        (self.out_dir / RANKS_DIR).mkdir(exist_ok=True)
        atomic_write_text(
            self.out_dir / RANKS_DIR / f"rank-{self.rank:05d}.json", json.dumps(manifest, indent=1)
        )
        return result

    def abort(self) -> None:
        """Leave no unfinished shard behind after an error."""
        self.writer.abort()
        self._closed = True

    def __enter__(self) -> ShardBuilder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            if not self._closed:
                self.close()
        else:
            self.abort()


def write_tail(out_dir: Path, rank: int, tail: list[tuple[np.ndarray, str, int]]) -> dict[str, Any]:
    """Save a rank's tail segments (tokens, doc_id, offset) as a small Arrow file, atomically."""
    import pyarrow as pa

    lengths = np.fromiter((len(t) for t, _, _ in tail), dtype=np.int64, count=len(tail))
    offsets = np.zeros(len(tail) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate([t for t, _, _ in tail]).astype(np.uint32, copy=False)
    table = pa.table(
        {
            "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)),
            "doc_id": pa.array([d for _, d, _ in tail], pa.string()),
            "offset": pa.array([o for _, _, o in tail], pa.int64()),
        }
    )
    folder = out_dir / TAILS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"tail-{rank:05d}.arrow"
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    os.replace(tmp, folder / name)
    return {"path": f"{TAILS_DIR}/{name}", "segments": len(tail), "tokens": int(lengths.sum())}


def _pack_tails(
    out_dir: Path, manifests: list[dict[str, Any]], rank: int
) -> tuple[list[dict[str, Any]], PackStats]:
    """Pack every rank's tail into the shards of one extra rank (`rank`), in rank order."""
    import pyarrow as pa

    for path in out_dir.glob(f"shard-{rank:05d}-*.arrow"):
        path.unlink()  # an earlier merge's output
    tails = [m["tail"] for m in manifests if m.get("tail")]
    if not tails:
        return [], PackStats()
    first = manifests[0]
    packing = first["packing"]
    writer = ShardWriter(
        out_dir,
        seq_len=first["seq_len"],
        pad_id=packing["pad_id"],
        rank=rank,
        max_shard_bytes=packing["max_shard_bytes"],
        dtype=first["dtype"],
    )
    packer = Packer(writer, first["seq_len"], pool_tokens=packing["pool_tokens"])
    with writer:
        for tail in tails:
            with pa.memory_map(str(out_dir / tail["path"]), "r") as source:
                table = pa.ipc.open_file(source).read_all()
            column = table.column("tokens").combine_chunks()
            values = column.values.to_numpy()
            bounds = column.offsets.to_numpy()
            ids = table.column("doc_id").to_pylist()
            for i, (doc_id, offset) in enumerate(zip(ids, table.column("offset").to_pylist(), strict=True)):
                packer.add_segment(values[bounds[i] : bounds[i + 1]], doc_id, offset)
        stats = packer.finish()
    return writer.close(), stats


def merge_ranks(out_dir: str | os.PathLike[str], world_size: int | None = None) -> dict[str, Any]:
    """Write `index.json` over the manifests of every rank (all must agree on tokenizer and packing).

    Tails that ranks set aside are packed first, into the shards of one more rank numbered `world_size`.
    """
    out_dir = Path(out_dir)
    ranks_dir = out_dir / RANKS_DIR
    paths = sorted(ranks_dir.glob("rank-*.json")) if ranks_dir.is_dir() else []
    manifests = [json.loads(p.read_text()) for p in paths]
    found = {m["rank"] for m in manifests}
    if world_size is not None:
        missing = sorted(set(range(world_size)) - found)
        if missing:
            raise ShardFormatError(
                f"{ranks_dir}: no manifest for rank(s) {missing[:20]} of {world_size}: those ranks did not finish"
            )
        manifests = [m for m in manifests if m["rank"] < world_size]
    if not manifests:
        raise ShardFormatError(f"{ranks_dir}: no rank manifests; nothing was packed into {out_dir}")
    first = manifests[0]
    for m in manifests[1:]:
        if m["key"] != first["key"]:
            raise ShardFormatError(
                f"{ranks_dir}/rank-{m['rank']:05d}.json: packed with another tokenizer or options than rank "
                f"{first['rank']}; rerun all ranks into an empty folder"
            )
    manifests.sort(key=lambda m: m["rank"])
    total = PackStats()
    shards: list[dict[str, Any]] = []
    for m in manifests:
        total = total.merge(PackStats(**m["stats"]))
        shards.extend(m["shards"])
    merge_rank = world_size if world_size is not None else manifests[-1]["rank"] + 1
    tail_shards, tail_stats = _pack_tails(out_dir, manifests, merge_rank)
    shards.extend(tail_shards)
    for key in ("tokens", "padding_tokens", "rows"):  # tail documents are counted by their ranks already
        setattr(total, key, getattr(total, key) + getattr(tail_stats, key))
    stats = total.as_dict()
    stats["ranks"] = len(manifests)
    write_index(
        out_dir,
        tokenizer=first["tokenizer"],
        seq_len=first["seq_len"],
        shards=shards,
        stats=stats,
        dtype=first["dtype"],
        extra={"packing": first["packing"]},
    )
    listed = {s["path"] for s in shards}
    orphans = sorted(p.name for p in out_dir.iterdir() if _SHARD_RE.match(p.name) and p.name not in listed)
    if orphans:  # from an earlier run with more ranks: not part of this folder's data, left for the user
        logger.warning(f"{out_dir}: {len(orphans)} shard file(s) not in index.json, e.g. {orphans[:3]}")
    return read_index(out_dir)


def build_shards(
    records: Iterable[tuple[str, str]] | Iterable[str],
    tokenizer: Any,
    out_dir: str | os.PathLike[str],
    options: PackOptions,
    *,
    batch_size: int = 1024,
    progress: bool = False,
) -> dict[str, Any]:
    """Pack texts (or (doc_id, text) pairs) into a complete shard folder in this process; returns the index."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    with ShardBuilder(out_dir, tokenizer, options, rank=0) as builder:
        ids: list[str] = []
        texts: list[str] = []
        for n, record in enumerate(tqdm(records, desc="pack", unit="doc", disable=not progress)):
            if isinstance(record, str):
                ids.append(str(n))
                texts.append(record)
            else:
                ids.append(str(record[0]))
                texts.append(record[1])
            if len(texts) >= batch_size:
                builder.add_texts(texts, ids)
                ids, texts = [], []
        if texts:
            builder.add_texts(texts, ids)
    # a single-process build is rank 0 of 1; older manifests of other ranks are not ours
    for path in (out_dir / RANKS_DIR).glob("rank-*.json"):
        if path.name != "rank-00000.json":
            path.unlink()
    return merge_ranks(out_dir, world_size=1)
