"""The compiled piece table: every lookup confirmed byte for byte, growth and clearing change no answer."""

from __future__ import annotations

import random

import numpy as np

from pipelines.dedup.kernels import insert_pieces
from pipelines.dedup.piece_table import PieceTable, TextBatch
from pipelines.dedup.shingles import PieceTokenizer, simplified_batch


def test_pieces_are_found_by_their_bytes_through_growth_and_shared_hashes():
    rng = random.Random(8)
    pieces = list({"".join(rng.choice("ab0é") for _ in range(rng.randrange(1, 12))).encode() for _ in range(3000)})
    known, unseen = pieces[:2000], pieces[2000:]
    table = PieceTable()
    splits = 0
    for lo in range(0, len(known), 300):  # several additions: the slots are rebuilt as the table grows
        chunk = known[lo : lo + 300]
        table.add(chunk, [p + b" " + p if i % 7 == 0 else None for i, p in enumerate(chunk)])
        splits += len(range(0, len(chunk), 7))
    text = TextBatch.of([b" ".join(rng.sample(pieces, 40)) for _ in range(50)])
    found = table.pieces(text)
    words = text.buffer.tobytes()
    want = {p: i for i, p in enumerate(known)}
    got = [words[s : s + n] for s, n in zip(found.at.tolist(), found.lengths.tolist(), strict=True)]
    assert found.ids.tolist() == [want.get(p, -1) for p in got]
    assert {p for p in got if p in unseen} and table.splits == splits

    # two pieces with one XXH64 between them (forced here): the bytes decide
    first, second = known[0], known[1]
    table.piece_hash[1] = table.piece_hash[0]
    table.slots.fill(-1)
    insert_pieces(table.slots, table.piece_hash, 0, table.count)
    probe = TextBatch.of([first + b" " + second + b" " + unseen[0]])
    h = np.full(3, table.piece_hash[0], dtype=np.uint64)
    found = table.pieces(probe)
    assert table.find(probe.buffer, found.at, found.lengths, h).tolist() == [0, 1, -1]


def test_a_small_cache_gives_the_same_words(prose_texts):
    texts = [t[:4000] for t in prose_texts[:40]] + ["we cannot go 10km and don't wanna see it"]
    batch = simplified_batch(texts)
    roomy, cramped = PieceTokenizer(), PieceTokenizer(max_cached=200)
    want = roomy.joined(batch).texts()
    for lo in range(0, len(texts), 10):  # the cramped table is cleared before most batches
        part = simplified_batch(texts[lo : lo + 10])
        assert cramped.joined(part).texts() == want[lo : lo + 10]
    assert roomy.table.splits and b"can not" in b" ".join(want)
