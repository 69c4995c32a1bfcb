"""Recipes: validated before anything runs, with errors naming the key or path; end to end on a small corpus
with known duplicates and junk, through the `longtrove curate` command."""

from __future__ import annotations

import random

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.demo import _near_copy, real_texts, recipe_keeps
from pipelines.recipe import DEFAULT_RECIPE, RecipeError, load_recipe, parse_recipe
from pipelines.runner import read_curated
from pipelines.stages import build_stages
from tests.pipelines.conftest import simple_recipe, train_lid_model, write_jsonl


def write_recipe(path, data: dict):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"input": {"pathz": ["x"]}}, "input.pathz: unknown key"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"executor": {"tasks": "many"}}, "executor.tasks: Input should be a valid integer"),
        ({"executor": {"tasks": 0}}, "executor.tasks: Input should be greater than 0"),
        ({"filters": [{"gopher_qualty": {}}]}, "filters.0.gopher_qualty: unknown key"),
        ({"filters": [{"c4": {"min_num_sentences": "five"}}]}, "filters.0.c4.min_num_sentences"),
        ({"filters": [{"c4": {}, "gopher_quality": {}}]}, "each filter names exactly one of"),
        ({"input": {"format": "csv"}}, "input.format: Input should be 'jsonl', 'parquet', 'huggingface' or 'named'"),
        ({"dedup": {"minhash": {"num_buckets": -1}}}, "dedup.minhash.num_buckets"),
        ({"input": {"format": "huggingface", "dataset": "json"}}, "set input.dataset_options.split"),
    ],
)
def test_invalid_recipe_names_the_key(tmp_path, change, expected):
    data = simple_recipe([tmp_path], tmp_path)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = write_recipe(tmp_path / "recipe.yaml", data)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_language_filter_without_offline_model_says_what_to_do(tmp_path):
    path = write_jsonl(tmp_path / "in" / "part.jsonl", [{"id": "a", "text": "Some text."}])
    data = simple_recipe([path], tmp_path, filters=[{"language": {"languages": ["en"]}}])
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    message = str(info.value)
    assert "filters.0.language" in message and "model_path" in message and "lid.176.bin" in message

    data["filters"][0]["language"]["model_path"] = str(tmp_path / "missing.bin")
    with pytest.raises(RecipeError, match=r"filters\.0\.language\.model_path: no such file"):
        parse_recipe(data)


def test_yaml_errors_and_relative_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")

    write_jsonl(tmp_path / "data" / "part.jsonl", [{"id": "a", "text": "Some text."}])
    recipe = load_recipe(
        write_recipe(tmp_path / "r.yaml", {"input": {"paths": ["data"]}, "output": {"path": "out"}})
    )
    assert recipe.input.paths == [str(tmp_path / "data")]
    assert recipe.output.path == str(tmp_path / "out")
    assert recipe.work_dir == str(tmp_path / "out") + ".work"


def test_default_recipe_has_every_stage():
    recipe = load_recipe(DEFAULT_RECIPE, overrides={"input": {"paths": ["/"]}}, check_paths=False)
    stages = build_stages(recipe)
    # the component rounds and the removals follow up from minhash-large-001 at run time
    assert [s.name for s in stages] == [
        "filter", "exact-find", "exact-filter", "minhash-buckets", "minhash-large-001", "minhash-filter",
    ]  # fmt: skip
    assert [s.tasks for s in stages] == [4, 4, 4, 4, 4, 4]
    assert [type(s).__name__ for s in stages[0].pipeline] == [
        "GuardedJsonlReader", "FastGopherRepetitionFilter", "FastGopherQualityFilter", "FastC4QualityFilter",
        "FastFineWebQualityFilter", "ParquetWriter", "ExactDedupSignature",
    ]  # fmt: skip
    assert type(stages[2].pipeline[-1]).__name__ == "MinhashBandSignature"


def test_datatrove_engine_keeps_datatrove_stages():
    recipe = load_recipe(
        DEFAULT_RECIPE,
        overrides={"input": {"paths": ["/"]}, "dedup": {"engine": "datatrove"}},
        check_paths=False,
    )
    stages = build_stages(recipe)
    assert [s.name for s in stages] == [
        "filter", "exact-find", "exact-filter", "minhash-buckets", "minhash-cluster", "minhash-filter",
    ]  # fmt: skip
    assert [s.tasks for s in stages] == [4, 1, 4, 14, 1, 4]


@pytest.fixture(scope="module")
def curation_corpus(tmp_path_factory):
    """Real documents that pass the default filters, plus exact copies, near copies and junk, in three files."""
    recipe = load_recipe(DEFAULT_RECIPE, overrides={"input": {"paths": ["/"]}}, check_paths=False)
    keeps = recipe_keeps(recipe)
    rng = random.Random(7)
    good = []
    for doc_id, text in real_texts()[80:]:
        if len(good) == 14:
            break
        if keeps(text):
            good.append({"id": doc_id, "text": text})
    assert len(good) == 14
    groups = {d["id"]: d["id"] for d in good}
    records = list(good)
    for d in good[:3]:
        records.append({"id": d["id"] + "#copy", "text": d["text"]})
        groups[d["id"] + "#copy"] = d["id"]
    for d in sorted(good[3:], key=lambda d: -len(d["text"]))[:3]:  # long enough for MinHash to be sure
        records.append({"id": d["id"] + "#mirror", "text": _near_copy(d["text"], rng)})
        groups[d["id"] + "#mirror"] = d["id"]
    junk = [
        {"id": "junk-repeat", "text": "\n\n".join([good[7]["text"][:300]] * 15)},
        {"id": "junk-symbols", "text": " ".join(f"#{i} ### {i * 7}" for i in range(200))},
        {"id": "junk-short", "text": "Subscribe now."},
        {"id": "junk-menu", "text": "\n".join(["Home and the garden for all"] * 30)},
    ]
    records += junk
    rng.shuffle(records)
    folder = tmp_path_factory.mktemp("curation-corpus")
    for i in range(3):
        write_jsonl(folder / f"part-{i}.jsonl", records[i::3])
    return folder, good, groups, [j["id"] for j in junk]


def test_curate_command_end_to_end(tmp_path, dask_client, curation_corpus):
    folder, good, groups, junk = curation_corpus
    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    recipe["input"]["paths"] = [str(folder)]
    recipe["output"] = {"path": str(tmp_path / "curated")}
    recipe["executor"]["tasks"] = 3
    path = write_recipe(tmp_path / "recipe.yaml", recipe)

    address = dask_client.scheduler.address
    result = CliRunner().invoke(app, ["curate", str(path), "--scheduler", address, "--no-progress"])
    assert result.exit_code == 0, result.output
    for step in ("Jsonl (checked)", "Gopher Repetition", "FineWeb Quality", "MinHash filter"):
        assert step in result.output

    kept = [d["id"] for d in read_curated(tmp_path / "curated")]
    assert len(kept) == len(set(kept))
    assert not set(kept) & set(junk)
    # one document of each group of duplicates, and every unique good document
    assert sorted(groups[i] for i in kept) == sorted(d["id"] for d in good)


def test_curate_command_exit_status(tmp_path, dask_client):
    path = write_jsonl(tmp_path / "in" / "part.jsonl", [{"id": "a", "text": "fine text"}, b"{broken"])
    recipe = write_recipe(
        tmp_path / "r.yaml", simple_recipe([path], tmp_path, input={"on_bad_record": "fail"})
    )
    address = dask_client.scheduler.address
    result = CliRunner().invoke(app, ["curate", str(recipe), "--scheduler", address, "--no-progress"])
    assert result.exit_code == 1
    assert "rank 0" in result.output and f"{path}:2: bad_json" in result.output

    bad = write_recipe(tmp_path / "bad.yaml", {"input": {"paths": [str(tmp_path / "missing")]}})
    result = CliRunner().invoke(app, ["curate", str(bad)])
    assert result.exit_code == 2
    assert "input.paths.0: no such file or folder" in result.output


def test_huggingface_dataset_input(tmp_path, dask_client):
    """A dataset through `datasets.load_dataset` (its json builder on local files: no network)."""
    path = write_jsonl(
        tmp_path / "in" / "data.jsonl",
        [{"id": f"d{i}", "text": f"Document {i} of a dataset."} for i in range(8)]
        + [{"id": "x", "text": ""}],
    )
    data = simple_recipe(
        [],
        tmp_path,
        input={
            "format": "huggingface",
            "paths": [],
            "dataset": "json",
            "dataset_options": {
                "data_files": str(path),
                "split": "train",
                "cache_dir": str(tmp_path / "hf-cache"),
            },
        },
    )
    from pipelines.runner import run_recipe

    recipe = parse_recipe(data)
    rows = run_recipe(recipe, client=dask_client, progress=False)
    assert rows[0].detail == {"empty": 1}
    assert sorted(d["id"] for d in read_curated(recipe.output.path)) == [f"d{i}" for i in range(8)]


def test_language_filter_with_a_local_model(tmp_path, dask_client, prose_docs):
    """A real fastText model, trained here on English prose and on shuffled letters, loaded from model_path."""
    model_path = train_lid_model(tmp_path, prose_docs)
    rng = random.Random(5)

    good = [{"id": f"en-{i}", "text": d["text"][:2000]} for i, d in enumerate(prose_docs[40:46])]
    noise = []
    for i, d in enumerate(prose_docs[50:53]):
        letters = list(d["text"][:2000].lower())
        rng.shuffle(letters)
        noise.append({"id": f"zz-{i}", "text": "".join(letters)})
    path = write_jsonl(tmp_path / "in" / "part.jsonl", good + noise)
    data = simple_recipe(
        [path],
        tmp_path,
        filters=[{"language": {"languages": ["en"], "threshold": 0.5, "model_path": str(model_path)}}],
    )
    from pipelines.runner import run_recipe

    recipe = parse_recipe(data)
    rows = run_recipe(recipe, client=dask_client, progress=False)
    curated = read_curated(recipe.output.path)
    assert sorted(d["id"] for d in curated) == sorted(d["id"] for d in good)
    assert all(d["metadata"]["language"] == "en" for d in curated)
    assert rows[1].step.startswith("Language ID") and rows[1].dropped == len(noise)
