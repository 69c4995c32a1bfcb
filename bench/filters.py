"""Benchmark: the default recipe's quality filters on the shared bench corpus, ours against datatrove's chain.

Both run under datatrove's LocalPipelineExecutor with the same ranks and worker processes, in this run: read the
parquet corpus, apply the recipe's filters, and write for every document its fate (kept, with a hash of the text
the filters leave, or the step and reason that dropped it). The figures are documents/s and MB/s of input text,
wall clock; then the two fates are compared document by document (the count of differences must be 0).

Language ID needs a fastText model, which this machine may not have: pass --lid-model (or have one in datatrove's
download cache), otherwise the language filter is left out and the output says so.

    python bench/filters.py                  # the whole corpus
    python bench/filters.py --limit 300      # 300 documents per rank, for a quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
# bench/ holds scripts named like standard modules (tokenize.py): keep it off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def default_filters(engine: str, lid_model: str | None):
    """The filter steps of the default recipe (plus language ID when a model is at hand), for one engine."""
    from pipelines.recipe import DEFAULT_RECIPE, load_recipe
    from pipelines.stages import build_filters

    overrides = {"input": {"paths": [str(_HERE)]}, "filter_engine": engine}
    recipe = load_recipe(DEFAULT_RECIPE, overrides=overrides, check_paths=False)
    if lid_model:
        from pipelines.recipe import FilterSpec

        recipe.filters.insert(0, FilterSpec.model_validate({"language": {"model_path": lid_model}}))
    return build_filters(recipe)


def _fate_kept(self, doc) -> dict:
    import hashlib

    return {
        "id": doc.id,
        "fate": "kept",
        "text": hashlib.blake2b(doc.text.encode(), digest_size=12).hexdigest(),
    }


def _fate_dropped(self, doc) -> dict:
    return {"id": doc.id, "fate": f"{self.output_filename.template}: {doc.metadata.get('filter_reason', '')}"}


def run(
    engine: str, corpus: Path, out: Path, tasks: int, workers: int, limit: int, lid_model: str | None
) -> float:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    steps = default_filters(engine, lid_model)
    for i, step in enumerate(steps):
        step.exclusion_writer = JsonlWriter(
            str(out / "fates"),
            output_filename=f"step{i}-${{rank}}.jsonl",
            adapter=_fate_dropped,
            compression=None,
        )
    pipeline = [
        ParquetReader(str(corpus), glob_pattern="*/*.parquet", limit=limit),
        *steps,
        JsonlWriter(
            str(out / "fates"), output_filename="kept-${rank}.jsonl", adapter=_fate_kept, compression=None
        ),
    ]
    executor = LocalPipelineExecutor(
        pipeline, tasks=tasks, workers=workers, logging_dir=str(out / "logs"), skip_completed=False
    )
    start = time.perf_counter()
    executor.run()
    return time.perf_counter() - start


def fates(out: Path) -> dict[str, tuple]:
    result = {}
    for path in sorted((out / "fates").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            result[record["id"]] = (record["fate"], record.get("text"))
    return result


def corpus_size(corpus: Path, limit: int) -> tuple[int, int]:
    """Documents and UTF-8 bytes of text the readers see (limit: per file, as the ranks read one file each)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    docs = size = 0
    for path in sorted(corpus.glob("*/*.parquet")):
        text = pq.read_table(path, columns=["text"]).column("text")
        if limit > 0:
            text = text.slice(0, limit)
        docs += len(text)
        size += pc.sum(pc.binary_length(pc.cast(text, "binary"))).as_py()
    return docs, size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bench-dir", type=Path, default=BENCH, help="the shared bench folder (holds corpus/)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes for both runs")
    parser.add_argument("--limit", type=int, default=-1, help="documents per file (-1: all)")
    parser.add_argument("--lid-model", default=None, help="a local fastText language-ID model (lid.176.bin)")
    parser.add_argument("--keep", type=Path, default=None, help="keep outputs in this folder")
    args = parser.parse_args()

    corpus = args.bench_dir / "corpus"
    if not corpus.is_dir():
        sys.exit(f"no bench corpus at {corpus} (pass --bench-dir)")
    from pipelines.filters import cached_lid_model

    lid_model = args.lid_model or (str(cached_lid_model("ft176") or "") or None)
    tasks = len(
        list(corpus.glob("*/*.parquet"))
    )  # one file a rank: both runs see the same documents per rank
    docs, size = corpus_size(corpus, args.limit)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-filters-"))
    try:
        ours_s = run("fast", corpus, root / "ours", tasks, args.workers, args.limit, lid_model)
        anchor_s = run("datatrove", corpus, root / "datatrove", tasks, args.workers, args.limit, lid_model)
        ours, anchor = fates(root / "ours"), fates(root / "datatrove")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    differ = sum(ours.get(doc_id) != fate for doc_id, fate in anchor.items()) + len(set(ours) - set(anchor))
    kept = sum(fate[0] == "kept" for fate in anchor.values())
    mb = size / 1e6
    print(
        f"corpus: {corpus}  documents={docs} ({mb:.1f} MB)  ranks={tasks} workers={args.workers} limit={args.limit}"
    )
    print(f"filters: {', '.join(type(s).__name__ for s in default_filters('fast', lid_model))}")
    if not lid_model:
        print("language ID: left out (no fastText model on this machine; pass --lid-model)")
    print(
        f"ours   fast filters:            {docs / ours_s:8.1f} docs/s  {mb / ours_s:6.2f} MB/s  ({ours_s:.1f}s)"
    )
    print(
        f"anchor datatrove filter chain:  {docs / anchor_s:8.1f} docs/s  {mb / anchor_s:6.2f} MB/s  ({anchor_s:.1f}s)"
    )
    print(
        f"ratio ours/datatrove: {anchor_s / ours_s:.2f}x   documents compared: {len(anchor)} (kept {kept})   "
        f"decisions that differ: {differ}"
    )


if __name__ == "__main__":
    main()
