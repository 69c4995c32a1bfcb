"""The output folder of `longtrove pack`: one run's shards only.

A folder holding an earlier run's shards is refused unless the user says what to do with it: `--resume` keeps
the ranks that finished (only when every option that decides the shards is the same as then, which is why each
run records its options in `pack-run.json`), `--overwrite` removes what an earlier run wrote (and refuses when
the folder also holds files that pack did not write, so nothing of the user's is deleted).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from packing.build import RANKS_DIR, TAILS_DIR
from packing.format import INDEX_FILE, atomic_write_text

RUN_FILE = "pack-run.json"
LOGS_DIR = "_logs"
_RUN_FORMAT = "longtrove.pack-run"
# what a pack run leaves in its folder: shards, bookkeeping, and temporary names of atomic writes
_OURS = re.compile(r"^(shard-\d{5}-\d{5}\.arrow|\..+\.tmp-\d+)$")
_OUR_NAMES = {INDEX_FILE, RUN_FILE, RANKS_DIR, TAILS_DIR, LOGS_DIR}


class OutputFolderError(ValueError):
    """The output folder cannot take this run as asked; the message says why and which option to use."""


# options recorded under a name that is not their command-line flag
_FLAGS = {
    "inputs": "the inputs",
    "tokenizer": "--tokenizer, by fingerprint",
    "max_shard_bytes": "--max-shard-mb",
    "rows_per_batch": "--seq-len/--dtype",
}


def _flag(option: str) -> str:
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _not_ours(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in _OUR_NAMES and not _OURS.match(p.name))


def _staging_sibling(folder: Path) -> Path:
    from pipelines.executor import STAGING_SUFFIX

    return folder.parent / f".{folder.name}{STAGING_SUFFIX}"


def read_run_options(folder: Path) -> dict[str, Any] | None:
    """The options an earlier run recorded in `folder`, or None without a record."""
    path = folder / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OutputFolderError(f"{path}: not valid JSON ({e}); pass --overwrite to start again") from None
    if not isinstance(record, dict) or record.get("format") != _RUN_FORMAT or "options" not in record:
        raise OutputFolderError(f"{path}: not a pack run record; pass --overwrite to start again")
    return record["options"]


def prepare_output(folder: Path, options: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
    """Make `folder` ready for a run with `options` (every option that decides the shards), or refuse.

    Called before any work starts, so a refusal costs nothing. On success the run's options are on record.
    """
    if resume and overwrite:
        raise OutputFolderError("--resume keeps an earlier run's ranks, --overwrite removes them: choose one")
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"{folder}: exists and is not a folder")
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if entries and resume:
        earlier = read_run_options(folder)
        if earlier is None:
            raise OutputFolderError(
                f"--resume: {folder} holds no {RUN_FILE}, so its options are unknown; "
                "pass --overwrite to start again, or choose an empty folder"
            )
        for key in [*options, *(k for k in earlier if k not in options)]:
            if earlier.get(key) != options.get(key):
                raise OutputFolderError(
                    f"--resume: {key} ({_flag(key)}) differs from the earlier run in {folder} "
                    f"(earlier {_describe(earlier.get(key))}, now {_describe(options.get(key))}); rerun with "
                    "the earlier options, or pass --overwrite to start again"
                )
        return
    if entries and not overwrite:
        raise OutputFolderError(
            f"{folder} is not empty ({len(entries)} entries, e.g. {entries[0]!r}): pass --resume to continue "
            "an earlier run, --overwrite to replace it, or choose an empty folder"
        )
    if entries:
        foreign = _not_ours(folder)
        if foreign:
            raise OutputFolderError(
                f"--overwrite: {folder} holds {len(foreign)} file(s) that pack did not write, e.g. "
                f"{foreign[0]!r}; move them away or choose another folder (nothing was removed)"
            )
        clean_output(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": _RUN_FORMAT, "options": options}
    atomic_write_text(folder / RUN_FILE, json.dumps(record, indent=1) + "\n")


def clean_output(folder: Path) -> None:
    """Remove what a pack run wrote in `folder`: the index first, so a half-cleaned folder never looks done."""
    (folder / INDEX_FILE).unlink(missing_ok=True)
    (folder / RUN_FILE).unlink(missing_ok=True)
    for path in sorted(folder.iterdir()):
        if path.name in _OUR_NAMES or _OURS.match(path.name):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(_staging_sibling(folder), ignore_errors=True)
