"""Haystack sources: folders, parquet, jsonl, Hugging Face datasets, and haystacks shorter than the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longctx.assemble import AssemblyError
from longctx.drafts import BuildContext
from longctx.haystack import (
    MAX_UNIT_CHARS,
    NOISE_SENTENCE,
    HaystackError,
    load_haystack,
    split_units,
    tokenize_units,
)
from longctx.sample import build_sample
from longctx.tasks import TASKS
from tests.conftest import CL100K_OFFLINE
from tokenization import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(CL100K_OFFLINE, num_threads=1)


@pytest.fixture(scope="module")
def docs(prose_texts: list[str]) -> list[str]:
    return prose_texts[:12]


def test_units_are_sentences_capped_at_word_boundaries(prose_texts: list[str]) -> None:
    text = " ".join(prose_texts)
    units = split_units(text)
    assert max(len(u) for u in units) <= MAX_UNIT_CHARS
    assert all(u == u.strip() and "  " not in u and "\n" not in u for u in units)
    # Nothing lost: the units hold every word of the text, in order.
    assert " ".join(units).split() == text.split()


def test_folder_parquet_jsonl_and_hf_sources_read_the_same_documents(tmp_path: Path, docs: list[str]) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"doc{i:02d}.txt").write_text(d)
    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), tmp_path / "docs.parquet")
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    hf_dir = tmp_path / "hfdata"
    hf_dir.mkdir()
    (hf_dir / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    expected = [u for d in docs for u in split_units(d)]
    for spec, field in (
        (str(folder), "text"),
        (str(tmp_path / "docs.parquet"), "text"),
        (str(tmp_path / "docs.jsonl"), "body"),
        (f"hf:{hf_dir}@train", "text"),
    ):
        hay = load_haystack(spec, text_field=field)
        assert hay.units == expected, spec
        assert hay.provenance["documents"] == len(docs)
        assert len(hay.provenance["sha256"]) == 64


def test_bad_sources_name_the_file_line_or_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 5}\n')
    with pytest.raises(HaystackError, match=r"bad.jsonl:2: no string field 'text'"):
        load_haystack(str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(HaystackError, match=r"broken.jsonl:2: not valid JSON"):
        load_haystack(str(broken))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(HaystackError, match=r"t.parquet: no column 'text' \(columns: body\)"):
        load_haystack(str(tmp_path / "t.parquet"))
    with pytest.raises(HaystackError, match="no such haystack"):
        load_haystack(str(tmp_path / "missing"))


def test_separator_placement_makes_counts_add_up(tok) -> None:
    noise = tokenize_units(tok, [NOISE_SENTENCE] * 50, "\n")
    essay = load_haystack("essay")
    prose = tokenize_units(tok, essay.units[:400], " ")
    assert noise.form == "after" and prose.form == "before"
    for units in (noise, prose):
        joined = units.sep.join(units.texts)
        # Per-unit counts (in their form) add up to the count of the joined text within a token or two.
        assert abs(int(units.counts.sum()) - len(tok.encode(joined))) <= 2
        assert units.ids.dtype == np.uint32


def test_short_haystack_repeats_with_a_note_or_fails(tmp_path: Path, tok, docs: list[str]) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "only.txt").write_text(docs[0][:1500])
    ctx = BuildContext(tok, haystack=str(folder))
    line = build_sample(ctx, TASKS["niah_single_2"], 8192, 50.0, seed=5, index=0)
    assert len(tok.encode(line["prompt"])) == 8192 - 128
    assert any("repeated" in n for n in line["notes"])
    assert line["haystack"]["kind"] == "folder" and line["haystack"]["source"] == "small"
    strict = BuildContext(tok, haystack=str(folder), on_short_haystack="fail")
    with pytest.raises(AssemblyError, match="too short for this length"):
        build_sample(strict, TASKS["niah_single_2"], 8192, 50.0, seed=5, index=0)
    # Long enough: no note, even when failing on short haystacks is asked for.
    roomy = BuildContext(tok, haystack="essay", on_short_haystack="fail")
    ok = build_sample(roomy, TASKS["niah_single_2"], 8192, 50.0, seed=5, index=0)
    assert ok["notes"] == []


def test_user_haystack_replaces_noise_and_essay_but_not_needle_haystacks(tmp_path: Path, tok, docs) -> None:
    pq.write_table(pa.table({"text": docs}), tmp_path / "curated.parquet")
    ctx = BuildContext(tok, haystack=str(tmp_path / "curated.parquet"))
    single = build_sample(ctx, TASKS["niah_single_1"], 4096, 25.0, seed=1, index=0)
    assert NOISE_SENTENCE not in single["prompt"] and single["haystack"]["kind"] == "parquet"
    distractors = build_sample(ctx, TASKS["niah_multikey_2"], 4096, 25.0, seed=1, index=0)
    assert distractors["haystack"]["kind"] == "distractor needles"
    assert distractors["prompt"].count("One of the special magic numbers for") > 50


def test_folder_of_document_files_reads_their_documents(tmp_path: Path, docs: list[str]) -> None:
    """The curated output of `longtrove curate` (a folder of per-rank parquet files) is a haystack as it is."""
    curated = tmp_path / "curated"
    curated.mkdir()
    pq.write_table(pa.table({"text": docs[:5]}), curated / "00000.parquet")
    pq.write_table(pa.table({"text": docs[5:]}), curated / "00001.parquet")
    staging = curated / ".staging"  # half-written files of a killed task are not documents
    staging.mkdir()
    pq.write_table(pa.table({"text": ["half-written"]}), staging / "00002.parquet")
    hay = load_haystack(str(curated))
    assert hay.units == [u for d in docs for u in split_units(d)]
    assert hay.provenance["documents"] == len(docs)
