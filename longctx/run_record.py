"""run.json and the suite's identity: which model, mode and suite a results folder belongs to, and what the
last run did."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from longctx.eval_config import EvalConfig
from longctx.suite_reader import suite_files
from longctx.transport import EndpointError

RUN_FILE = "run.json"


def count_suite_lines(
    suite_dir: Path, meta: dict[str, Any] | None = None, cfg: EvalConfig | None = None
) -> int:
    """Number of samples to expect, for the progress total: from suite.json's list of files when it has one,
    else by counting newlines (which reads the whole suite once more)."""
    meta = meta or {}
    files = meta.get("files")
    if isinstance(files, list) and all(
        isinstance(f, dict) and {"task", "length", "samples"} <= set(f) for f in files
    ):
        return sum(
            int(f["samples"])
            for f in files
            if (cfg is None or cfg.tasks is None or f["task"] in cfg.tasks)
            and (cfg is None or cfg.lengths is None or int(f["length"]) in cfg.lengths)
        )
    total = 0
    for path in suite_files(suite_dir):
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                total += chunk.count(b"\n")
    return total


def suite_fingerprint(suite_dir: Path) -> str:
    """sha256 of suite.json (or of the file names and sizes without it): ties a results folder to its suite."""
    meta = suite_dir / "suite.json"
    digest = hashlib.sha256()
    if meta.exists():
        digest.update(meta.read_bytes())
    else:
        for path in suite_files(suite_dir):
            digest.update(f"{path.relative_to(suite_dir)}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def json_bytes(payload: Any) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def check_same_run(out_dir: Path, cfg: EvalConfig, suite_dir: Path, fingerprint: str) -> None:
    """Refuse a results folder that holds another model's, mode's or suite's answers."""
    run_path = out_dir / RUN_FILE
    if not run_path.exists():
        return
    previous = json.loads(run_path.read_text())
    same = (previous.get("model"), previous.get("suite_fingerprint"), bool(previous.get("chat")))
    if same != (cfg.model, fingerprint, cfg.chat):
        raise EndpointError(
            f"{out_dir} holds results of model {previous.get('model')!r} "
            f"({'chat' if previous.get('chat') else 'completion'} mode) on suite {previous.get('suite')}; "
            f"use a new --out folder for model {cfg.model!r} on {suite_dir}"
        )
