"""Caches of tokenizer.json engines, in memory and on disk, so that each worker process loads a tokenizer in a blink.

Converting a 100k-vocabulary tokenizer.json (parse, fingerprint, ranks, stress proof against `tokenizers`)
takes seconds; a pipeline loads it once per worker process. The result is a pure function of the file's
content and of the tiktoken/tokenizers versions, so it is kept under `$LONGTROVE_CACHE_DIR` (default
`~/.cache/longtrove/tokenizers`; set it to an empty string to disable) as one `.npz` per content hash:
numpy arrays for the ranks and a JSON header for the rest. No pickle: a cache file is data, never code.
Files are written to a temporary name and renamed; an unreadable or stale file is ignored and rebuilt.
`engine_for(raw, where)` is the way in: the process's own few engines first, then the disk, then a build.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tokenization.engine import JsonEngine, build_engine
from tokenization.fastpath import fast_encoding
from tokenization.textprep import TextPreparer

CACHE_FORMAT = 1


def cache_dir() -> Path | None:
    """Where conversions are cached, or None when caching is disabled."""
    configured = os.environ.get("LONGTROVE_CACHE_DIR")
    if configured is not None:
        return Path(configured).expanduser() if configured.strip() else None
    return Path.home() / ".cache" / "longtrove" / "tokenizers"


@lru_cache(maxsize=1)
def _versions() -> dict[str, Any]:
    """Everything a cached conversion depends on besides the file: both engines and the converting code."""
    import tiktoken
    import tokenizers

    code = hashlib.sha256()
    for module in ("fastpath.py", "textprep.py", "engine.py", "special_ids.py", "cache.py", "fingerprint.py"):
        code.update((Path(__file__).parent / module).read_bytes())
    return {
        "format": CACHE_FORMAT,
        "code": code.hexdigest(),
        "tiktoken": tiktoken.__version__,
        "tokenizers": tokenizers.__version__,
    }


def _path(key: str) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / f"{key}.npz"


def save_engine(key: str, engine: JsonEngine) -> None:
    """Store what `load_engine` needs; failures (read-only home, full disk) only cost the next load time."""
    path = _path(key)
    if path is None:
        return
    header: dict[str, Any] = {
        "versions": _versions(),
        "fingerprint": engine.fingerprint,
        "special": engine.special,
        "vocab_size": engine.vocab_size,
        "fast_reason": engine.fast_reason,
        "stress_failure": engine.stress_failure,
        "special_id_mismatches": engine.special_id_mismatches,
    }
    arrays: dict[str, np.ndarray] = {}
    if engine.fast is not None:
        params = engine.fast_params
        header["pat_str"] = params["pat_str"]
        header["preparer_spec"] = params["preparer_spec"]
        ranks = engine.fast._mergeable_ranks
        tokens = list(ranks)
        arrays["blob"] = np.frombuffer(b"".join(tokens), dtype=np.uint8)
        arrays["ends"] = np.cumsum(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)))
        arrays["ranks"] = np.fromiter(ranks.values(), dtype=np.int64, count=len(tokens))
        if params["rank_to_id"] is not None:
            arrays["rank_to_id"] = params["rank_to_id"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        return


def load_engine(key: str, raw: str, where: str) -> JsonEngine | None:
    """The cached engine for this content, or None (absent, unreadable, or made by other versions)."""
    path = _path(key)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(npz["header"].tobytes().decode("utf-8"))
            if header.get("versions") != _versions():
                return None
            fast_arrays = (
                (
                    npz["blob"].tobytes(),
                    npz["ends"],
                    npz["ranks"],
                    npz.get("rank_to_id"),
                )
                if "pat_str" in header
                else None
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    engine = JsonEngine(
        raw=raw,
        where=where,
        fingerprint=header["fingerprint"],
        special={str(k): int(v) for k, v in header["special"].items()},
        vocab_size=int(header["vocab_size"]),
        fast_reason=header["fast_reason"],
        stress_failure=header["stress_failure"],
        special_id_mismatches=header["special_id_mismatches"],
    )
    if fast_arrays is not None:
        blob, ends, ranks, rank_to_id = fast_arrays
        starts = np.concatenate([[0], ends[:-1]]).tolist()
        mergeable = {blob[a:b]: r for a, b, r in zip(starts, ends.tolist(), ranks.tolist(), strict=True)}
        engine.fast = fast_encoding(header["pat_str"], mergeable)
        engine.fast_params = {
            "pat_str": header["pat_str"],
            "rank_to_id": None if rank_to_id is None else rank_to_id.astype(np.uint32),
            "preparer_spec": header["preparer_spec"],
            "preparer": TextPreparer.from_spec(header["preparer_spec"]),
        }
    return engine


_ENGINES: OrderedDict[str, JsonEngine] = OrderedDict()
_ENGINES_MAX = 8
_ENGINES_LOCK = threading.Lock()


def engine_for(raw: str, where: str) -> JsonEngine:
    """The engine of a tokenizer.json's text: kept in this process, else from disk, else built and stored."""
    key = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    with _ENGINES_LOCK:
        if key in _ENGINES:
            _ENGINES.move_to_end(key)
            return _ENGINES[key]
    engine = load_engine(key, raw, where)
    if engine is None:
        engine = build_engine(raw, where)
        save_engine(key, engine)
    with _ENGINES_LOCK:
        _ENGINES[key] = engine
        while len(_ENGINES) > _ENGINES_MAX:
            _ENGINES.popitem(last=False)
    return engine


def forget_engines_in_memory() -> None:
    """Drop this process's engines, so the next load reads the disk cache as a new worker process would."""
    with _ENGINES_LOCK:
        _ENGINES.clear()
