"""Benchmark: the quality-bucket step against datatrove's FastTextClassifierFilter, same documents, same model.

The anchor is datatrove's fastText classifier filter annotating every document (one fastText call per document).
The measured step is longtrove's quality step in one process: the scoring pass (one native fastText call per
batch, plus the rank's score histogram) and the bucketing pass (percentile edges from the histogram, a bucket per
document). Both run in the same process, one after the other, for several rounds; the figure is documents per
second of each and their ratio per round. Every document's score is compared between the two (differences are
counted: the batched path must give datatrove's scores exactly).

Without --model, a small fastText model is trained here (in a fresh interpreter) to tell documentation prose
(label hq) from fortune-cookie texts (label lq).

    python bench/buckets.py                       # the whole bench corpus
    python bench/buckets.py --limit 5000          # the first 5,000 documents, for a quick check
    python bench/buckets.py --model m.bin --label hq
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
# bench/ holds scripts named like standard modules (tokenize.py): keep it off the import path
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

TRAIN = (
    "import fasttext, sys; fasttext.train_supervised(sys.argv[1], epoch=3, seed=0, thread=1, verbose=0)"
    ".save_model(sys.argv[2])"
)


def load_documents(corpus: Path, limit: int | None) -> list[tuple[str, str, str]]:
    """(id, text, source) of every document of the bench corpus, in file order."""
    import pyarrow.parquet as pq

    docs = []
    for path in sorted(corpus.rglob("*.parquet")):
        table = pq.read_table(path, columns=["id", "text"])
        source = path.parent.name if path.parent != corpus else path.stem
        docs += [(str(i), t, source) for i, t in zip(table["id"].to_pylist(), table["text"].to_pylist(),
                                                        strict=True)]
    rng = random.Random(0)
    rng.shuffle(docs)  # the three sources interleaved, in a fixed order
    return docs[:limit] if limit else docs


def train_model(docs: list[tuple[str, str, str]], folder: Path) -> Path:
    """A fastText model trained on a sample: documentation lines are hq, fortunes lq."""
    rng = random.Random(1)
    sample = rng.sample(docs, min(4000, len(docs)))
    train = folder / "train.txt"
    with train.open("w") as f:
        for _, text, source in sample:
            label = "lq" if source.startswith("fortunes") else "hq"
            f.write(f"__label__{label} {' '.join(text.split())[:2000]}\n")
    model = folder / "quality.bin"
    subprocess.run([sys.executable, "-c", TRAIN, str(train), str(model)], check=True)
    return model


def run_datatrove(model: Path, label: str, docs: list) -> tuple[float, list[float]]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    step = FastTextClassifierFilter(str(model), remove_labels=[(label, 2.0)], newline_replacement=" ")
    step.model  # load outside the timing, as the other side does  # noqa: B018
    documents = [Document(text=t, id=i) for i, t, _ in docs]
    start = time.perf_counter()
    kept = list(step.run(iter(documents)))
    elapsed = time.perf_counter() - start
    return elapsed, [d.metadata.get(f"__label__{label}", 0.0) for d in kept]


def run_buckets(model: Path, label: str, docs: list, work: Path, buckets: int) -> tuple[float, list[float], list[int]]:
    from datatrove.data import Document

    from pipelines.curation.config import QualityConfig
    from pipelines.curation.quality import SCORE_KEY, BucketAssigner, EnsembleScorer

    config = QualityConfig(classifiers=[{"path": str(model), "label": label}], buckets=buckets)
    scorer = EnsembleScorer(config, str(work / "histograms"))
    scorer._load()  # load outside the timing, as the other side does
    assigner = BucketAssigner(config, str(work / "histograms"), ranks=1)
    documents = [Document(text=t, id=i) for i, t, _ in docs]
    start = time.perf_counter()
    scored = list(scorer.run(iter(documents), rank=0, world_size=1))
    bucketed = list(assigner.run(iter(scored), rank=0, world_size=1))
    elapsed = time.perf_counter() - start
    return elapsed, [d.metadata[SCORE_KEY] for d in bucketed], [d.metadata["quality_bucket"] for d in bucketed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=BENCH / "corpus", help="folder of parquet files (id, text)")
    parser.add_argument("--limit", type=int, default=None, help="documents to use (default: all)")
    parser.add_argument("--model", type=Path, default=None, help="a fastText model (default: train one here)")
    parser.add_argument("--label", default="hq", help="the label whose probability is the score")
    parser.add_argument("--buckets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (anchor, measured), ratio per round")
    args = parser.parse_args()

    docs = load_documents(args.corpus, args.limit)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = args.model or train_model(docs, tmp_path)
        print(f"{len(docs):,} documents from {args.corpus}; model {model.name} (label {args.label})")
        ratios = []
        for round_ in range(args.rounds):
            anchor_s, anchor_scores = run_datatrove(model, args.label, docs)
            ours_s, our_scores, buckets = run_buckets(model, args.label, docs, tmp_path / f"r{round_}",
                                                      args.buckets)
            anchor_rate, our_rate = len(docs) / anchor_s, len(docs) / ours_s
            ratios.append(our_rate / anchor_rate)
            print(
                f"round {round_ + 1}: datatrove FastTextClassifierFilter {anchor_rate:,.0f} docs/s | "
                f"longtrove quality buckets (score + bucket) {our_rate:,.0f} docs/s | ratio {ratios[-1]:.2f}x"
            )
        differences = sum(a != b for a, b in zip(anchor_scores, our_scores, strict=True))
        largest = max((abs(a - b) for a, b in zip(anchor_scores, our_scores, strict=True)), default=0.0)
        counts = [buckets.count(b) for b in range(args.buckets)]
        print(f"score differences vs datatrove: {differences} of {len(docs):,} (largest |diff| {largest:.3g})")
        print(f"documents per bucket: {counts}")
        print(f"median ratio longtrove / datatrove: {statistics.median(ratios):.2f}x over {args.rounds} rounds")


if __name__ == "__main__":
    main()
