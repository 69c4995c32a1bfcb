"""`longtrove demo`, after the shards: long-context tests from the curated documents, scored end to end.

The suite is built from the curated output with the demo's own tokenizer, sent to the reference server on loopback
(it answers only from the last `DEMO_WINDOW` tokens of each prompt, so needles deep in the context are missed), and
reported: the same path as evaluating a served model, without a GPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

DEMO_TASKS = ["niah_single_1", "niah_multikey_1", "vt"]
DEMO_LENGTHS = [2048, 4096]
DEMO_DEPTHS = [0.0, 50.0, 100.0]
DEMO_WINDOW = 1024


def demo_stage(ctx: Any) -> dict[str, Any]:
    """Build, evaluate and report a small long-context suite; return where it went and the scores."""
    from longctx.client import EvalConfig, run_eval
    from longctx.reference_server import ReferenceServer
    from longctx.report import write_report
    from longctx.suite import SuiteConfig, build_suite
    from tokenization import load_tokenizer

    tokenizer_path = ctx.results["shards"]["tokenizer"]
    root = Path(ctx.out_dir) / "longctx"
    suite_dir, results_dir = root / "suite", root / "results"
    config = SuiteConfig(
        tokenizer=tokenizer_path,
        tasks=DEMO_TASKS,
        lengths=DEMO_LENGTHS,
        depths=DEMO_DEPTHS,
        samples=len(DEMO_DEPTHS),
        haystack=str(ctx.curated_dir),
        chat=False,
    )
    build_suite(config, suite_dir, progress=False)
    # the demo starts over: an earlier run's answers would be skipped as done and this run would score none
    shutil.rmtree(results_dir, ignore_errors=True)
    with ReferenceServer(load_tokenizer(tokenizer_path), window_tokens=DEMO_WINDOW) as server:
        stats = run_eval(
            suite_dir,
            results_dir,
            EvalConfig(endpoint=server.url, model="reference", concurrency=4, progress=False),
        )
    summary = write_report(results_dir)
    return {
        "suite": str(suite_dir),
        "samples": stats.ok,
        "report": str(results_dir / "report.md"),
        "average": summary["average"],
    }
