"""The lm-evaluation-harness export: lm-eval's own loader reads it, and a run against a loopback server scores it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from longctx.export_lmeval import TAG, export_lm_eval
from longctx.suite import SuiteConfig, build_suite
from tests.conftest import CL100K_OFFLINE

lm_eval = pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    base = tmp_path_factory.mktemp("export")
    # Depth 0 puts every needle at the very start: a left-truncated prompt would lose it.
    cfg = SuiteConfig(
        tokenizer=CL100K_OFFLINE,
        tasks=["niah_single_1", "vt"],
        lengths=[4096, 6000],
        depths=[0.0],
        samples=2,
        seed=5,
    )
    build_suite(cfg, base / "suite", progress=False)
    summary = export_lm_eval(base / "suite", base / "lm-eval")
    return base / "suite", base / "lm-eval", summary


def task_manager(folder: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=False)


def test_lm_eval_task_manager_loads_every_task_and_sends_prompts_verbatim(exported) -> None:
    suite, folder, summary = exported
    assert summary["max_length"] == 6000 and "max_length=6000" in summary["command"]
    names = [
        "longtrove_niah_single_1_4k",
        "longtrove_niah_single_1_6000",
        "longtrove_vt_4k",
        "longtrove_vt_6000",
    ]
    assert sorted(summary["tasks"]) == sorted(names)
    tm = task_manager(folder)
    assert set(names) <= set(tm.all_tasks) and TAG in tm.all_tasks
    tasks = tm.load(names)["tasks"]
    for name, task in tasks.items():
        task.build_all_requests(limit=None, rank=0, world_size=1)
        source = suite / name.removeprefix("longtrove_").rsplit("_", 1)[0] / f"{name.rsplit('_', 1)[1]}.jsonl"
        samples = [json.loads(x) for x in source.read_text().splitlines()]
        assert len(task.instances) == len(samples) == 2
        for inst, sample in zip(task.instances, samples, strict=True):
            context, gen_kwargs = inst.arguments
            assert context == sample["prompt"]  # no delimiter, no few-shot, nothing cut
            assert gen_kwargs["max_gen_toks"] == sample["max_new_tokens"]
            assert gen_kwargs["until"] == [] and gen_kwargs["do_sample"] is False
            good = task.process_results(inst.doc, [" " + ", ".join(sample["references"]) + "."])
            bad = task.process_results(inst.doc, [" nothing relevant"])
            assert good == {"score": 100.0} and bad == {"score": 0.0}


def test_lm_eval_runs_the_tasks_against_a_loopback_completions_server(exported) -> None:
    from longctx.reference_server import ReferenceServer
    from tokenization import load_tokenizer

    _, folder, summary = exported
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    tok = load_tokenizer(CL100K_OFFLINE)
    # The reference model reads its whole (large) window, so a full prompt gets every answer right.
    with ReferenceServer(tok, window_tokens=1 << 20) as server:
        from lm_eval.api.registry import get_model
        from lm_eval.evaluator import evaluate

        model_args = summary["command"].split("--model_args ")[1]
        model_args = model_args.replace("http://HOST:PORT", server.url).replace("MODEL", "reference")
        lm = get_model("local-completions").create_from_arg_string(model_args)
        names = ["longtrove_niah_single_1_6000", "longtrove_vt_6000"]
        # evaluate() rather than simple_evaluate(): the latter collects environment details through torch,
        # which takes longer than the whole run.
        results = evaluate(
            lm=lm, task_dict=task_manager(folder).load(names), bootstrap_iters=0, log_samples=False
        )
    scores = {name: r["score,none"] for name, r in results["results"].items()}
    assert scores == {"longtrove_niah_single_1_6000": 100.0, "longtrove_vt_6000": 100.0}
