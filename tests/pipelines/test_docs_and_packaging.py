"""What a new user copies first: the manual's recipe example validates as written on the demo's corpus, the
examples say how to reach the installed command, and the package metadata installs without deprecation warnings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_manuals_recipe_example_passes_every_check_on_the_demo_corpus(tmp_path: Path) -> None:
    from pipelines.demo import build_corpus
    from pipelines.recipe import load_recipe

    manual = (ROOT / "docs" / "curation.md").read_text()
    example = re.search(r"cat > recipe\.yaml <<'YAML'\n(.*?)\nYAML\n", manual, re.S)
    assert example, "docs/curation.md lost its recipe example"
    build_corpus(tmp_path / "demo-out" / "corpus")  # what `longtrove demo` writes first
    (tmp_path / "recipe.yaml").write_text(example.group(1))

    recipe = load_recipe(tmp_path / "recipe.yaml")  # paths, model files and text_key checked, as curate does

    assert recipe.input.paths == [str(tmp_path / "demo-out" / "corpus")]
    assert [spec.kind for spec in recipe.filters] == [
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb_quality",
    ]


def test_examples_say_how_to_reach_the_command_installed_in_the_venv() -> None:
    for name in ("README.md", "docs/curation.md", "docs/shards.md"):
        text = (ROOT / name).read_text()
        assert "longtrove " in text and "source .venv/bin/activate" in text, name


def test_the_license_is_an_spdx_expression_and_the_build_backend_supports_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # a TOML table warns on every install
    (setuptools,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77  # the first setuptools that reads an SPDX `license`
    assert not any(c.startswith("License ::") for c in project["project"].get("classifiers", []))
