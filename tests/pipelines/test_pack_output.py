"""`longtrove pack` into a folder that is not empty: refused, resumed only with the same options, or overwritten;
`inspect` names files that index.json does not list; option errors are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packing.format import read_index


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, prose_texts: list[str]) -> Path:
    folder = tmp_path_factory.mktemp("small-corpus")
    for part in range(2):
        with open(folder / f"part-{part}.jsonl", "w") as f:
            for i in range(part, 40, 2):
                f.write(json.dumps({"id": f"d{i}", "text": prose_texts[i]}) + "\n")
    return folder


def _pack(runner: CliRunner, corpus: Path, tokenizer: Path, out: Path, client, *extra: str):
    from pipelines.cli import app

    args = ["pack", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out), "--workers", "2"]
    args += ["--scheduler", client.scheduler.address, "--no-progress"]
    if "--seq-len" not in extra:
        args += ["--seq-len", "512"]
    if "--eos" not in extra:
        args += ["--eos", "</s>"]
    return runner.invoke(app, [*args, *extra])


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_a_used_output_folder_is_refused_resumed_with_the_same_options_or_overwritten(
    tmp_path: Path, small_corpus: Path, bpe_tokenizer_path: Path, dask_client
) -> None:
    runner = CliRunner(env={"COLUMNS": "400"})
    out = tmp_path / "shards"
    first = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client)
    assert first.exit_code == 0, first.output
    assert first.stderr == ""  # --no-progress: no bars, and no datatrove log lines
    shards = {s["path"]: (out / s["path"]).stat().st_mtime_ns for s in read_index(out)["shards"]}

    again = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client)
    assert again.exit_code == 2 and "not empty" in _error_line(again) and "--overwrite" in again.stderr

    # a finished run whose index was removed, resumed with another seq_len: refused before any work
    (out / "index.json").unlink()
    other = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client, "--resume", "--seq-len", "1024")
    line = _error_line(other)
    assert other.exit_code == 2 and "seq_len (--seq-len)" in line and "earlier 512, now 1024" in line
    assert not (out / "index.json").exists()

    # some ranks done, resumed with another separator: refused up front too, naming the option
    (out / "_ranks" / "rank-00001.json").unlink()
    for marker in (out / "_logs" / "completions").iterdir():
        if marker.name.endswith("00001"):
            marker.unlink()
    other = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client, "--resume", "--eos", "<pad>")
    assert other.exit_code == 2 and "eos_id (--eos-id)" in _error_line(other)
    other = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client, "--resume", "--id-key", "doc")
    assert other.exit_code == 2 and "id_key (--id-key)" in _error_line(other)

    resumed = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client, "--resume")
    assert resumed.exit_code == 0, resumed.output
    index = read_index(out)
    assert index["seq_len"] == 512 and index["stats"]["documents"] == 40
    rank0 = [p for p in shards if p.startswith("shard-00000-")]
    assert rank0 and all((out / p).stat().st_mtime_ns == shards[p] for p in rank0)  # rank 0 was kept

    # a stale shard beside the listed ones: inspect names it and fails; other files are a note
    from pipelines.cli import app

    shutil.copy(out / rank0[0], out / "shard-00042-00000.arrow")
    (out / "README.txt").write_text("notes of the user")
    inspected = runner.invoke(app, ["inspect", str(out)])
    assert inspected.exit_code == 1, inspected.output
    assert "shard-00042-00000.arrow" in inspected.output and "README.txt" in inspected.output
    report = json.loads(runner.invoke(app, ["inspect", str(out), "--json"]).stdout)
    assert report["unlisted_files"] == ["README.txt", "shard-00042-00000.arrow"]

    # --overwrite never deletes what pack did not write
    refused = _pack(runner, small_corpus, bpe_tokenizer_path, out, dask_client, "--overwrite")
    assert refused.exit_code == 2 and "README.txt" in _error_line(refused)
    assert (out / "README.txt").exists() and (out / "index.json").exists()
    (out / "README.txt").unlink()
    replaced = _pack(
        runner, small_corpus, bpe_tokenizer_path, out, dask_client, "--overwrite", "--seq-len", "1024"
    )
    assert replaced.exit_code == 0, replaced.output
    assert read_index(out)["seq_len"] == 1024 and not (out / "shard-00042-00000.arrow").exists()
    assert runner.invoke(app, ["inspect", str(out)]).exit_code == 0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--seq-len", "0"], "--seq-len 0: must be at least 512"),
        (["--seq-len", "-5"], "--seq-len -5: must be at least 512"),
        (["--seq-len", "1"], "--seq-len 1: must be at least 512"),
        (["--seq-len", "512", "--no-eos", "--eos", "</s>"], "no_eos contradicts eos"),
        (["--seq-len", "512", "--dtype", "uint8"], "--dtype: Input should be 'uint32' or 'uint16'"),
        (["--seq-len", "512", "--pad-id", "-1"], "--pad-id: Input should be greater than or equal to 0"),
    ],
)
def test_option_errors_are_one_line_naming_the_option(
    tmp_path: Path, small_corpus: Path, extra: list[str], expected: str
) -> None:
    from pipelines.cli import app

    args = ["pack", str(small_corpus), "--tokenizer", "unused", "--out", str(tmp_path / "o"), *extra]
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    line = _error_line(result)
    assert result.exit_code == 2 and expected in line, result.output
    assert "pydantic" not in line and "http" not in line and not (tmp_path / "o").exists()
