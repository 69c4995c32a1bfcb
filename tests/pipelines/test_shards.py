"""Tokenize-and-pack on a real Dask cluster: ranks, determinism, the index over all ranks, and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from packing.format import read_index, verify_shards
from tests.packing.test_packer import read_documents


@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, prose_texts: list[str]) -> Path:
    """Four jsonl files and two parquet files of real prose, with ids, one empty text and one forged boundary."""
    folder = tmp_path_factory.mktemp("corpus")
    records = [{"id": f"p{i}", "text": t} for i, t in enumerate(prose_texts)]
    records[5]["text"] = ""
    records[9]["text"] = records[9]["text"][:300] + " </s> <|endoftext|> not a boundary"
    for part in range(4):
        with open(folder / f"part-{part}.jsonl", "w") as f:
            for record in records[part:60:4]:
                f.write(json.dumps(record) + "\n")
    import pyarrow as pa

    for part in range(2):
        rows = records[60 + part :: 2]
        pq.write_table(
            pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}),
            folder / f"more-{part}.parquet",
        )
    return folder


def _expected(tok, prose_texts: list[str], corpus: Path) -> dict[str, str]:
    texts = {}
    for path in sorted(corpus.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            texts[record["id"]] = record["text"]
    for path in sorted(corpus.glob("*.parquet")):
        for record in pq.read_table(path).to_pylist():
            texts[record["id"]] = record["text"]
    return {k: v for k, v in texts.items() if v}


def test_ranks_on_dask_cover_every_token_once_and_rerun_is_byte_identical(
    tmp_path: Path, corpus: Path, bpe_tokenizer_path: Path, prose_texts: list[str], dask_client
) -> None:
    from pipelines.inputs import input_readers
    from pipelines.steps import ShardsConfig, TokenizeAndPack, run_pack
    from tokenization import load_tokenizer

    def pack(out: Path) -> dict:
        config = ShardsConfig(
            output_folder=str(out),
            tokenizer=str(bpe_tokenizer_path),
            seq_len=1024,
            eos="</s>",
            max_shard_bytes=20 * 1024 * 4,
        )  # 20 rows a shard: several shards per rank
        step = TokenizeAndPack(config=config)
        readers, files = input_readers(
            [str(corpus)],
            text_key="text",
            id_key="id",
            split="train",
            counter_key=step.counter_key,
        )
        assert files == 6
        return run_pack(
            readers,
            config,
            tasks=3,
            client=dask_client,
            step=step,
            progress=False,
            logging_dir=str(tmp_path / f"logs-{out.name}"),
        )

    first = pack(tmp_path / "a")
    second = pack(tmp_path / "b")

    ranks = {s["path"][6:11] for s in first["shards"]}
    # three ranks, and rank 3: the ranks' emptiest last rows packed together at the end
    assert ranks == {"00000", "00001", "00002", "00003"} and len(first["shards"]) > 4
    assert [s["path"] for s in first["shards"] if s["path"].startswith("shard-00003")] == [
        "shard-00003-00000.arrow"
    ]
    total = first["stats"]["tokens"]
    assert first["stats"]["rows"] <= -(-total // 1024) + 1  # at most one row more than the lower bound
    assert first["shards"] == second["shards"]  # same names, rows, tokens and sha256: byte-identical
    assert first["stats"] == second["stats"] and first["stats"]["ranks"] == 3
    assert verify_shards(tmp_path / "a") == []
    assert first["stats"]["empty_documents"] == 1  # counted, though datatrove's reader drops it

    tok = load_tokenizer(bpe_tokenizer_path, eos_token="</s>")
    expected = _expected(tok, prose_texts, corpus)
    documents, row_fill = read_documents(tmp_path / "a")
    assert sorted(documents) == sorted(expected)  # every document once, across all ranks
    for doc_id, text in expected.items():
        ids = documents[doc_id]
        assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
        assert tok.decode(ids[:-1]) == text
    assert sum(row_fill) == first["stats"]["tokens"] == sum(len(d) for d in documents.values())


def test_pack_and_inspect_commands(
    tmp_path: Path, corpus: Path, bpe_tokenizer_path: Path, dask_client
) -> None:
    from pipelines.cli import app

    runner = CliRunner(env={"COLUMNS": "400"})  # wide enough that paths are not wrapped
    out = tmp_path / "shards"
    args = [
        "pack",
        str(corpus / "part-0.jsonl"),
        str(corpus / "more-1.parquet"),
        "--tokenizer",
        str(bpe_tokenizer_path),
        "--seq-len",
        "2048",
        "--out",
        str(out),
        "--eos",
        "</s>",
        "--workers",
        "2",
        "--scheduler",  # the running test cluster, as on a real cluster
        dask_client.scheduler.address,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    index = read_index(out)
    assert index["seq_len"] == 2048 and index["tokenizer"]["eos_id"] == index["tokenizer"]["pad_id"] == 2
    assert {s["path"][6:11] for s in index["shards"]} <= {
        "00000",
        "00001",
        "00002",
    }  # two ranks + their tails
    assert {s["path"][6:11] for s in index["shards"]} >= {"00000", "00001"}
    assert "fill rate" in result.output

    result = runner.invoke(app, ["inspect", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["problems"] == [] and report["rows"] == sum(s["rows"] for s in index["shards"])
    assert report["fill_rate"] == pytest.approx(index["stats"]["tokens"] / (report["rows"] * 2048))

    shard = out / index["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 1
    shard.write_bytes(bytes(data))
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 1 and "sha256" in result.output and shard.name in result.output


def test_pack_rejects_bad_input_with_clear_errors(
    tmp_path: Path, corpus: Path, bpe_tokenizer_path: Path
) -> None:
    from pipelines.cli import app

    runner = CliRunner(env={"COLUMNS": "400"})  # wide enough that paths are not wrapped
    base = ["--seq-len", "512", "--out", str(tmp_path / "o"), "--workers", "1"]
    jsonl = str(corpus / "part-1.jsonl")

    result = runner.invoke(
        app, ["pack", jsonl, "--tokenizer", str(tmp_path / "nope.json"), "--eos", "</s>", *base]
    )
    assert result.exit_code != 0 and "nope.json" in result.output

    not_a_tokenizer = tmp_path / "tokenizer.json"
    not_a_tokenizer.write_text('{"hello": 1}')
    result = runner.invoke(app, ["pack", jsonl, "--tokenizer", str(not_a_tokenizer), "--eos", "</s>", *base])
    assert result.exit_code != 0 and str(not_a_tokenizer) in result.output

    result = runner.invoke(app, ["pack", jsonl, "--tokenizer", str(bpe_tokenizer_path), *base])
    assert result.exit_code != 0 and "--eos" in result.output  # no separator chosen: refused, not guessed

    result = runner.invoke(
        app, ["pack", jsonl, "--tokenizer", str(bpe_tokenizer_path), "--eos", "<nope>", *base]
    )
    assert result.exit_code != 0 and "<nope>" in result.output

    result = runner.invoke(
        app,
        ["pack", jsonl, "--tokenizer", str(bpe_tokenizer_path), "--eos", "</s>", "--text-key", "body", *base],
    )
    assert result.exit_code != 0 and "part-1.jsonl" in result.output and "'body'" in result.output
    assert not (tmp_path / "o" / "index.json").exists()

    result = runner.invoke(
        app,
        [
            "pack",
            str(tmp_path / "missing.parquet"),
            "--tokenizer",
            str(bpe_tokenizer_path),
            "--eos",
            "</s>",
            *base,
        ],
    )
    assert result.exit_code != 0 and "missing.parquet" in result.output

    result = runner.invoke(app, ["inspect", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no index.json" in result.output


def test_shards_step_builds_from_a_recipe_mapping(tmp_path: Path, bpe_tokenizer_path: Path) -> None:
    from datatrove.data import Document
    from pydantic import ValidationError

    from packing.build import merge_ranks
    from pipelines.steps import TokenizeAndPack

    step = TokenizeAndPack.from_config(
        {"output_folder": str(tmp_path), "tokenizer": str(bpe_tokenizer_path), "seq_len": 256, "eos": "</s>"}
    )
    docs = [Document(text=f"document number {i} " * (i + 1), id=f"d{i}") for i in range(50)]
    list(step.run(iter(docs), rank=0, world_size=1))
    index = merge_ranks(tmp_path, world_size=1)
    assert index["stats"]["documents"] == 50 and step.stats["documents"].total == 50
    documents, _ = read_documents(tmp_path)
    assert len(documents) == 50 and np.all([d[-1] == 2 for d in documents.values()])
    with pytest.raises(ValidationError, match="seq_lenn"):
        TokenizeAndPack.from_config({"output_folder": "x", "tokenizer": "t", "seq_len": 8, "seq_lenn": 9})
    with pytest.raises(ValidationError, match="no_eos contradicts"):
        TokenizeAndPack.from_config(
            {"output_folder": "x", "tokenizer": "t", "seq_len": 8, "no_eos": True, "eos": "a"}
        )


def test_bad_jsonl_lines_stop_or_are_counted_and_hf_datasets_are_read(
    tmp_path: Path, corpus: Path, bpe_tokenizer_path: Path, dask_client
) -> None:
    from pipelines.executor import RankFailedError
    from pipelines.steps import ShardsConfig, pack_inputs

    def config(name: str) -> ShardsConfig:
        return ShardsConfig(
            output_folder=str(tmp_path / name), tokenizer=str(bpe_tokenizer_path), seq_len=512, eos="</s>"
        )

    bad = tmp_path / "in" / "bad.jsonl"
    bad.parent.mkdir()
    bad.write_text(
        '{"id": "a", "text": "first document"}\n{"id": "b", "text": broken\n\n[1, 2]\n'
        '{"id": "c", "text": "last document"}\n'
    )
    with pytest.raises(RankFailedError, match=r"bad\.jsonl line 2: not a JSON object"):
        pack_inputs([str(bad)], config("stop"), client=dask_client, progress=False)
    assert not (tmp_path / "stop" / "index.json").exists()
    # inputs may be fsspec URLs (s3://, gs://, ...): file:// takes the same path through fsspec
    url = f"file://{bad.parent}"
    index = pack_inputs([url], config("skip"), skip_bad_records=True, client=dask_client, progress=False)
    assert index["stats"]["bad_records"] == 2 and index["stats"]["documents"] == 2
    assert sorted(read_documents(tmp_path / "skip")[0]) == ["a", "c"]

    dataset = tmp_path / "hf-dataset"  # a dataset folder as load_dataset reads it (no hub needed)
    dataset.mkdir()
    (dataset / "train.jsonl").write_text((corpus / "part-2.jsonl").read_text())
    index = pack_inputs([f"hf:{dataset}"], config("hf"), client=dask_client, progress=False)
    expected = [json.loads(line) for line in (corpus / "part-2.jsonl").read_text().splitlines()]
    documents, _ = read_documents(tmp_path / "hf")
    assert sorted(documents) == sorted(r["id"] for r in expected if r["text"])


def test_demo_stage_packs_the_curated_documents(tmp_path: Path, prose_texts: list[str], dask_client) -> None:
    from types import SimpleNamespace

    import pyarrow as pa

    from pipelines.shards_demo import DEMO_SEQ_LEN, demo_stage

    curated = tmp_path / "curated"
    curated.mkdir()
    texts = prose_texts[:30]
    pq.write_table(pa.table({"id": [f"c{i}" for i in range(30)], "text": texts}), curated / "00000.parquet")
    ctx = SimpleNamespace(out_dir=tmp_path, curated_dir=curated, recipe=None)
    summary = demo_stage(ctx)
    index = read_index(tmp_path / "shards")
    assert summary["documents"] == index["stats"]["documents"] == 30
    assert summary["tokens"] == index["stats"]["tokens"] and summary["seq_len"] == DEMO_SEQ_LEN
    assert verify_shards(tmp_path / "shards") == []
    tokenizer = (tmp_path / "tokenizer" / "tokenizer.json").read_bytes()
    demo_stage(ctx)  # trained again from the same text: the same tokenizer and the same shards
    assert (tmp_path / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer
    assert read_index(tmp_path / "shards")["shards"] == index["shards"]
