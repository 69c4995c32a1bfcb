"""Named open datasets: the catalogue resolves names offline, local copies in the hub's layout read like the hub,
access problems fail up front with what to do, and every packaged recipe passes `curate --dry-run` offline."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.datasets.catalog import DatasetAccessError, load_catalog, resolve
from pipelines.recipe import RecipeError, load_recipe, parse_recipe
from pipelines.runner import read_curated, run_recipe

RECIPES = sorted((Path(__file__).parents[2] / "pipelines" / "recipes").glob("*.yaml"))
NAMED = [
    "nvidia/Nemotron-CC-v2",
    "nvidia/Nemotron-CC-v2.1",
    "nvidia/Nemotron-CC-Math-v1",
    "nvidia/Nemotron-CC-Code-v1",
    "nvidia/Nemotron-Pretraining-Code-v1",
    "nvidia/Nemotron-Pretraining-Code-v2",
    "nvidia/Nemotron-Pretraining-Specialized-v1",
    "nvidia/Nemotron-Pretraining-Dataset-sample",
]


def _write_parquet(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture()
def hub_copy(tmp_path, prose_docs) -> Path:
    """A local copy of two datasets in the hub's layout, with the column names their sources give."""
    root = tmp_path / "hub"
    texts = [d["text"][:3000] for d in prose_docs[:24]]
    math = root / "nvidia" / "Nemotron-CC-Math-v1"
    _write_parquet(math / "4plus" / "part-00000.parquet", {"text": texts[:10]})
    _write_parquet(math / "4plus" / "part-00001.parquet", {"text": texts[10:16]})
    _write_parquet(math / "3" / "part-00000.parquet", {"text": texts[16:]})
    code = root / "nvidia" / "Nemotron-Pretraining-Code-v2"
    _write_parquet(code / "Synthetic-Question-Answering" / "part-00000.parquet", {"content": texts[:7]})
    _write_parquet(
        code / "Nemotron-Code-Metadata" / "part-00000.parquet",
        {"repo": ["a/b"], "rel_path": ["x.py"], "commit_id": ["5d81d77"]},
    )
    return root


def test_catalogue_knows_the_open_datasets_with_a_source_for_every_fact():
    catalog = load_catalog()
    assert sorted(catalog) == sorted(NAMED)
    for name, entry in catalog.items():
        assert entry.access.gated and entry.access.source, name
        assert entry.text_column.source and entry.layout.source and entry.configs, name
        assert all(cfg.source for cfg in entry.configs.values()), name
    hq = resolve("nvidia/Nemotron-CC-v2", "High-Quality")
    assert (hq.data_files, hq.text_key, hq.root) == (
        "High-Quality/*.parquet", "text", "hf://datasets/nvidia/Nemotron-CC-v2"
    )
    assert "id column" in hq.unverified  # said, not invented
    assert resolve("nvidia/Nemotron-Pretraining-Code-v2", "Synthetic-Rewriting").text_key == "content"
    with pytest.raises(ValueError, match="no config 'High'"):
        resolve("nvidia/Nemotron-CC-v2", "High")


def test_recipe_reads_the_named_config_from_a_local_copy(tmp_path, hub_copy, prose_docs, dask_client):
    data = {
        "input": {
            "dataset": "nvidia/Nemotron-CC-Math-v1",
            "config": "4plus",
            "local_copy": str(hub_copy / "nvidia" / "Nemotron-CC-Math-v1"),
        },
        "dedup": {"exact": {"enabled": False}, "minhash": {"enabled": False}},
        "output": {"path": str(tmp_path / "curated")},
        "executor": {"tasks": 2},
    }
    recipe = parse_recipe(data)
    assert (recipe.input.format, recipe.input.text_key) == ("named", "text")
    run_recipe(recipe, client=dask_client, progress=False)
    docs = read_curated(recipe.output.path)
    assert sorted(d["text"] for d in docs) == sorted(d["text"][:3000] for d in prose_docs[:16])  # 4plus only
    assert {(d["metadata"]["dataset"], d["metadata"]["config"]) for d in docs} == {
        ("nvidia/Nemotron-CC-Math-v1", "4plus")
    }
    assert len({d["id"] for d in docs}) == 16  # no id column in the files: ids are file and row, all distinct


def test_pack_takes_a_name_and_config(tmp_path, hub_copy, prose_docs, bpe_tokenizer_path, dask_client, monkeypatch):
    from packing.format import read_index
    from pipelines.steps import ShardsConfig, pack_inputs

    monkeypatch.setenv("LONGTROVE_DATASETS_DIR", str(hub_copy))
    config = ShardsConfig(output_folder=str(tmp_path / "shards"), tokenizer=str(bpe_tokenizer_path), seq_len=512,
                          eos="</s>")
    index = pack_inputs(["nvidia/Nemotron-Pretraining-Code-v2:Synthetic-Question-Answering"], config, tasks=1,
                        client=dask_client, progress=False)
    assert index["stats"]["documents"] == 7  # the rows of that config, read from its "content" column
    assert read_index(tmp_path / "shards")["stats"]["tokens"] > 7 * 100


def test_metadata_only_config_and_unknown_config_are_recipe_errors(tmp_path):
    base = {"output": {"path": str(tmp_path / "out")}}
    with pytest.raises(RecipeError, match="holds no text"):
        parse_recipe({**base, "input": {"dataset": "nvidia/Nemotron-Pretraining-Code-v2",
                                        "config": "Nemotron-Code-Metadata"}}, check_paths=False)
    with pytest.raises(RecipeError, match="configs:"):
        parse_recipe({**base, "input": {"dataset": "nvidia/Nemotron-CC-v2", "config": "Top"}}, check_paths=False)


def test_offline_hub_fails_up_front_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LONGTROVE_DATASETS_DIR", raising=False)
    data = {"input": {"dataset": "nvidia/Nemotron-CC-v2", "config": "High-Quality"},
            "output": {"path": str(tmp_path / "out")}}
    started = time.monotonic()
    with pytest.raises(RecipeError) as error:
        parse_recipe(data)
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert "nvidia/Nemotron-CC-v2" in message and "local copy" in message and "\n" not in message

    from pipelines.inputs import InputError, input_readers

    with pytest.raises(InputError, match="local copy"):
        input_readers(["nvidia/Nemotron-CC-Math-v1:4plus"], counter_key="k")


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """Answers every request as the hub answers a gated dataset whose terms the user has not accepted."""

    def do_GET(self):  # noqa: N802 - the http.server interface
        body = b'{"error": "Access to dataset nvidia/Nemotron-CC-v2 is restricted. You must have access to it."}'
        self.send_response(403)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_gated_dataset_fails_up_front_naming_the_terms_and_the_token(tmp_path):
    """`longtrove curate` against a real HTTP server that answers like the hub for a gated dataset."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "input: {dataset: nvidia/Nemotron-CC-v2, config: High-Quality}\n"
        f"output: {{path: {tmp_path / 'out'}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LONGTROVE_"))}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "curate", str(recipe)], env=env,
                              capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "accept its terms at https://huggingface.co/datasets/nvidia/Nemotron-CC-v2" in done.stderr
    assert "HF_TOKEN" in done.stderr and "local copy" in done.stderr


def test_local_copy_without_the_config_names_the_pattern(hub_copy):
    from pipelines.datasets.catalog import list_files

    source = resolve("nvidia/Nemotron-CC-Math-v1", "4plus_MIND", local_copy=hub_copy / "nvidia" / "Nemotron-CC-Math-v1")
    with pytest.raises(DatasetAccessError, match=r"no files matching '4plus_MIND/\*.parquet'"):
        list_files(source)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_packaged_recipe_dry_runs_offline(recipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["curate", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    parsed = load_recipe(recipe, check_paths=False)
    assert f"Recipe {parsed.name}: valid" in result.output
    from pipelines.stages import build_stages

    for stage in build_stages(parsed):
        assert stage.name in result.output
    assert "estimated data volume" in result.output


def test_datasets_command_lists_names_and_sources():
    runner = CliRunner()
    listing = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    for name in NAMED:
        assert name in listing.output
    details = runner.invoke(app, ["datasets", "nvidia/Nemotron-Pretraining-Code-v2"], env={"COLUMNS": "200"})
    assert "content" in details.output and "(unverified)" in details.output and "[dl-script]" in details.output
    assert runner.invoke(app, ["datasets", "nvidia/None"]).exit_code == 2
