"""The partitioned exact-dedup find stage removes what datatrove's single ExactFindDedups removes."""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)

from pipelines.dedup.exact import ExactFindPartition
from pipelines.stages import document_text

RANKS, PARTITIONS, DOCS_PER_RANK = 3, 4, 45


def rank_docs(rank: int, texts: list[str]) -> list[Document]:
    # the same text comes back within a rank and across ranks, never at the same index in two ranks
    return [
        Document(text=texts[(7 * i + 3 * rank) % 20], id=f"{rank}-{i}", metadata={})
        for i in range(DOCS_PER_RANK)
    ]


def kept(dups_folder: str, config: ExactDedupConfig, texts: list[str]) -> list[tuple[str, int]]:
    out = []
    for rank in range(RANKS):
        step = ExactDedupFilter(dups_folder, config=config)
        out += [(d.id, d.metadata["duplicate_count"]) for d in step.run(rank_docs(rank, texts), rank, RANKS)]
    return out


def test_partitioned_find_equals_datatrove(tmp_path, prose_texts):
    texts = [t[:500] for t in prose_texts[:20]]
    config = ExactDedupConfig(content_getter=document_text)
    for rank in range(RANKS):
        ExactDedupSignature(str(tmp_path / "sigs-1"), config=config).run(rank_docs(rank, texts), rank, RANKS)
        ExactDedupSignature(str(tmp_path / "sigs-p"), config=config, finder_workers=PARTITIONS).run(
            rank_docs(rank, texts), rank, RANKS
        )
    ExactFindDedups(str(tmp_path / "sigs-1"), str(tmp_path / "dups-1"), config=config).run(None, 0, 1)
    for partition in range(PARTITIONS):
        step = ExactFindPartition(str(tmp_path / "sigs-p"), str(tmp_path / "dups-p"), config.hash_config)
        list(step.run(None, partition, PARTITIONS))

    assert len({p.parent.name for p in (tmp_path / "dups-p").rglob("*.c4_dup")}) > 1  # the work was split
    theirs = kept(str(tmp_path / "dups-1"), config, texts)
    ours = kept(str(tmp_path / "dups-p"), config, texts)
    assert ours == theirs
    assert len(ours) == 20 and sum(count for _, count in ours) == RANKS * DOCS_PER_RANK - 20
