"""Benchmark of the served-model runner: requests/s and its own CPU time per request.

The reference server runs in another process (`longtrove longctx serve-reference`, reading the last 4,096
tokens of each prompt with the real cl100k tokenizer), so the CPU measured here is the runner's alone: reading
the suite, building and sending the requests, parsing the answers, writing each result line and scoring.
The anchor, measured in the same run against the same server and prompts, is lm-evaluation-harness's
`local-completions` client (`LocalCompletionsAPI.generate_until`, text prompts, same concurrency).

Target: at 128K tokens the runner's CPU time stays under 5% of a request's wall time.

Then the same against a real llama.cpp server (llama-cpp-python's `python -m llama_cpp.server`, serving a tiny
random-weight Llama written as GGUF with the same cl100k tokenizer, on CPU), runner and anchor in the same run on
the same server and prompts, both sending the anchor's stop string so that the server does the same work. The model
is tiny so that the server's time stays short and the client's share shows; prompts stay at a few thousand
tokens (default 1K), since CPU prefill grows with the square of the length.

The suite comes from the project's builder, with its offsets.json; the same suite without it (every line then
validated in full), and chat mode, are measured too, at concurrency 1.

    .venv/bin/python bench/eval.py [--shared ../shared/bench] [--lengths 4k,128k] [--concurrency 1,4,16]
        [--repeat 3]   # figures are medians of 3 runs, runner and anchor alternating
        [--llama-lengths 1k] [--llama-samples 8] [--llama-concurrency 1,4] [--no-llama]
        [--stream auto|off]   # the runner's --stream: auto streams from the reference server (usage in the
                              # last event), llama-cpp-python is never streamed (no usage in its streams)
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder comes first on sys.path, where sibling benchmarks (tokenize.py, ...) would
# shadow standard modules; drop it before anything imports them.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "bench"
RESERVE = 128  # niah's answer budget, as the suite's max_new_tokens
STOP = {
    "stop": ["\n\n"]
}  # the anchor's stop string: sent by the runner too against llama.cpp, so both generate alike


def parse_length(text: str) -> int:
    text = text.strip().lower()
    return int(text[:-1]) * {"k": 1 << 10, "m": 1 << 20}[text[-1]] if text[-1] in "km" else int(text)


def label(n: int) -> str:
    return f"{n >> 20}M" if n % (1 << 20) == 0 else f"{n >> 10}K" if n % 1024 == 0 else str(n)


def build_suite(out: Path, tokenizer_path: Path, haystack: Path, length: int, samples: int) -> list[dict]:
    """The project's own builder: niah_single_2 (RULER's essay NIAH) on the pydocs corpus, depths 0-100%."""
    from longctx.suite import SuiteConfig
    from longctx.suite import build_suite as build

    cfg = SuiteConfig(
        tokenizer=str(tokenizer_path),
        tasks=["niah_single_2"],
        lengths=[length],
        depths=[0.0, 25.0, 50.0, 75.0, 100.0],
        samples=samples,
        seed=0,
        haystack=str(haystack),
        workers=min(2, os.cpu_count() or 1),
    )
    build(cfg, out, progress=False)
    return [json.loads(line) for path in sorted(out.glob("*/*.jsonl")) for line in path.open()]


def start_server(tokenizer_path: Path, window: int) -> tuple[subprocess.Popen, str]:
    argv = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "longctx",
        "serve-reference",
        "--tokenizer",
        str(tokenizer_path),
        "--port",
        "0",
        "--window-tokens",
        str(window),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the reference server did not start: {line!r}")
    return proc, line.split()[1]


def start_llama_server(tokenizer_path: Path, n_ctx: int, work: Path) -> tuple[object, str]:
    """llama-cpp-python's server with a tiny random-weight Llama (GGUF written here, the cl100k tokenizer)."""
    from tests.longctx.llama_server import MODEL_NAME, LlamaServer, write_tiny_llama

    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    model = write_tiny_llama(
        work / "tiny-llama.gguf", tokenizer_path, template, bos="<|endoftext|>", eos="<|endoftext|>"
    )
    server = LlamaServer(model, n_ctx, work / "llama-server.log").start()
    return server, MODEL_NAME


def measure_runner(
    suite: Path,
    url: str,
    concurrency: int,
    work: Path,
    *,
    chat: bool = False,
    model: str = "reference",
    extra_body: dict | None = None,
    stream: str = "auto",
) -> dict:
    from longctx.client import EvalConfig, read_results, run_eval

    out = Path(tempfile.mkdtemp(dir=work, prefix=f"runner-c{concurrency}-"))
    cfg = EvalConfig(
        endpoint=f"{url}/v1",
        model=model,
        concurrency=concurrency,
        progress=False,
        chat=chat,
        first_byte_timeout=600.0,
        stream=stream,
        extra_body=extra_body or {},
    )
    cpu, wall = time.process_time(), time.perf_counter()
    stats = run_eval(suite, out, cfg)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    results = read_results(out / "results.jsonl")
    latencies = [r["latency_s"] for r in results.values()]
    assert stats.ok == len(results), stats
    return {
        "n": stats.ok,
        "rps": stats.ok / wall,
        "cpu_ms": 1000 * cpu / stats.ok,
        "latency_ms": 1000 * sum(latencies) / len(latencies),
        "score": sum(r["score"] for r in results.values()) / len(results),
        "outputs": {sid: r["output"] for sid, r in results.items()},
    }


def cpu_share(ours: dict) -> tuple[float, str]:
    """The runner's CPU per request as a share of a request's wall time, and the words that say so."""
    share = 100 * ours["cpu_ms"] / ours["latency_ms"]
    text = f"CPU {ours['cpu_ms']:7.2f} ms/req = {share:5.2f}% of the {ours['latency_ms']:.0f} ms request wall time"
    return share, text


def median_run(runs: list[dict]) -> dict:
    """Each figure's median over the runs (outputs from the first run, scores are the same in all)."""
    out = dict(runs[0])
    for key in ("rps", "cpu_ms", "latency_ms"):
        if key in out:
            out[key] = statistics.median(r[key] for r in runs)
    out["same_outputs"] = all(r["outputs"] == runs[0]["outputs"] for r in runs)
    return out


def measure_anchor(
    rows: list[dict], url: str, concurrency: int, length: int, model: str = "reference"
) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    lm = LocalCompletionsAPI(
        base_url=f"{url}/v1/completions",
        model=model,
        tokenizer_backend=None,
        num_concurrent=concurrency,
        max_length=length + 1024,
        max_gen_toks=RESERVE,
        timeout=3600,
        max_retries=3,
    )
    requests = [
        Instance("generate_until", {}, (r["prompt"], {"until": ["\n\n"], "max_gen_toks": RESERVE}), i)
        for i, r in enumerate(rows)
    ]
    cpu, wall = time.process_time(), time.perf_counter()
    outputs = lm.generate_until(requests, disable_tqdm=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "n": len(rows),
        "rps": len(rows) / wall,
        "cpu_ms": 1000 * cpu / len(rows),
        "outputs": {r["id"]: o for r, o in zip(rows, outputs, strict=True)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="the shared benchmark data folder"
    )
    parser.add_argument("--lengths", default="4k,128k")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--samples", default="4k=96,128k=32", help="samples per length")
    parser.add_argument("--window", type=int, default=4096, help="tokens the reference server reads")
    parser.add_argument("--no-anchor", action="store_true", help="skip lm-eval's local-completions")
    parser.add_argument(
        "--stream",
        default="auto",
        choices=("auto", "on", "off"),
        help="the runner's --stream (auto: streamed where the server puts usage in a stream)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed")
    parser.add_argument("--llama-lengths", default="1k", help="lengths sent to the llama.cpp server")
    parser.add_argument("--llama-samples", type=int, default=8, help="samples per length (llama.cpp)")
    parser.add_argument("--llama-concurrency", default="1,4", help="concurrencies (llama.cpp)")
    parser.add_argument("--no-llama", action="store_true", help="skip the llama.cpp server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("lm-eval", "lm_eval", "aiohttp"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from tokenization import load_tokenizer

    tokenizer_path = args.shared / "tokenizers" / "cl100k_base.json"
    corpus = sorted((args.shared / "corpus" / "pydocs").glob("*.parquet"))
    if not tokenizer_path.exists() or not corpus:
        raise SystemExit(f"{args.shared}: needs tokenizers/cl100k_base.json and corpus/pydocs/*.parquet")
    tokenizer = load_tokenizer(str(tokenizer_path))
    lengths = [parse_length(n) for n in args.lengths.split(",")]
    per_length = {parse_length(k): int(v) for k, v in (p.split("=") for p in args.samples.split(","))}
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"haystack {corpus[-1].name} of pydocs; tokenizer {tokenizer.name} ({tokenizer.backend})")

    server, url = start_server(tokenizer_path, args.window)
    verdicts = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
            work = Path(tmp)
            for length in lengths:
                suite = work / f"suite-{length}"
                started = time.perf_counter()
                rows = build_suite(suite, tokenizer_path, corpus[-1], length, per_length.get(length, 16))
                built = time.perf_counter() - started
                mean_tokens = sum(r["token_count"] for r in rows) / len(rows)
                print(
                    f"\n{label(length)}: {len(rows)} samples of niah_single_2, {mean_tokens:,.0f} prompt tokens each "
                    f"({sum(len(r['prompt']) for r in rows) / len(rows) / 1e6:.2f} MB of text), built in {built:.1f} s"
                )
                for c in concurrencies:
                    # Runner and anchor alternate, each figure the median of --repeat runs: the machine is shared.
                    runs, anchors = [], []
                    for _ in range(args.repeat):
                        runs.append(measure_runner(suite, url, c, work, stream=args.stream))
                        if not args.no_anchor:
                            anchors.append(measure_anchor(rows, url, c, length))
                    ours = median_run(runs)
                    share, cost = cpu_share(ours)
                    line = (
                        f"eval {label(length):>5} c={c:<2} runner: {ours['rps']:7.2f} req/s, {cost} "
                        f"(score {ours['score']:.1f})"
                    )
                    if not args.no_anchor:
                        anchor = median_run(anchors)
                        same = (
                            anchor["outputs"] == ours["outputs"]
                            and ours["same_outputs"]
                            and anchor["same_outputs"]
                        )
                        line += (
                            f" | anchor lm-eval local-completions: {anchor['rps']:7.2f} req/s, CPU "
                            f"{anchor['cpu_ms']:7.2f} ms/req | ratio req/s {ours['rps'] / anchor['rps']:.2f}x, "
                            f"CPU/req {ours['cpu_ms'] / anchor['cpu_ms']:.2f}x | same outputs: {same}"
                        )
                    print(line, flush=True)
                    if length >= 128 * 1024:
                        verdicts.append((length, c, share))
                # A suite from elsewhere has no offsets.json: every line is then validated whole (simdjson) and
                # its prompt found by scanning, which costs more CPU; shown at c=1, where it weighs most.
                plain = work / f"suite-{length}-no-offsets"
                shutil.copytree(
                    suite, plain, ignore=shutil.ignore_patterns("offsets.json"), copy_function=os.link
                )
                ours = median_run(
                    [measure_runner(plain, url, 1, work, stream=args.stream) for _ in range(args.repeat)]
                )
                print(
                    f"eval {label(length):>5} c=1  runner, suite without offsets.json (lines validated in full): "
                    f"{cpu_share(ours)[1]}",
                    flush=True,
                )
                # --chat sends the messages to /v1/chat/completions (the reference server renders them first).
                ours = median_run(
                    [
                        measure_runner(suite, url, 1, work, chat=True, stream=args.stream)
                        for _ in range(args.repeat)
                    ]
                )
                print(
                    f"eval {label(length):>5} c=1  runner --chat: {cpu_share(ours)[1]} (score {ours['score']:.1f})",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=30)
    if not args.no_llama:
        bench_llama(args, tokenizer_path, corpus[-1])
    for length, c, share in verdicts:
        status = "PASS" if share < 5.0 else "FAIL"
        print(f"target {label(length)} c={c}: runner CPU {share:.2f}% of request wall time (< 5%): {status}")


def bench_llama(args: argparse.Namespace, tokenizer_path: Path, haystack: Path) -> None:
    """Runner and anchor against llama-cpp-python's server: requests/s, client CPU per request, same outputs."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError:
        print("\nllama.cpp: skipped (install llama-cpp-python[server], as the test extra does)")
        return
    lengths = [parse_length(n) for n in args.llama_lengths.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-eval-llama-") as tmp:
        work = Path(tmp)
        server, model = start_llama_server(tokenizer_path, max(lengths) + 256, work)
        print(
            f"\nllama.cpp: llama-cpp-python server, tiny random-weight Llama (GGUF, cl100k), context {max(lengths) + 256}"
        )
        try:
            for length in lengths:
                suite = work / f"suite-{length}"
                rows = build_suite(suite, tokenizer_path, haystack, length, args.llama_samples)
                for c in (int(x) for x in args.llama_concurrency.split(",")):
                    runs, anchors = [], []
                    for _ in range(args.repeat):
                        runs.append(
                            measure_runner(
                                suite, server.url, c, work, model=model, extra_body=STOP, stream=args.stream
                            )
                        )
                        anchors.append(measure_anchor(rows, server.url, c, length, model=model))
                    ours, anchor = median_run(runs), median_run(anchors)
                    same = ours["outputs"] == anchor["outputs"]
                    print(
                        f"eval llama.cpp {label(length):>5} c={c:<2} runner: {ours['rps']:6.2f} req/s, "
                        f"{cpu_share(ours)[1]} | anchor lm-eval local-completions: {anchor['rps']:6.2f} req/s, "
                        f"CPU {anchor['cpu_ms']:7.2f} ms/req | ratio req/s {ours['rps'] / anchor['rps']:.2f}x, "
                        f"CPU/req {ours['cpu_ms'] / anchor['cpu_ms']:.2f}x | same outputs: "
                        f"{same and ours['same_outputs'] and anchor['same_outputs']}",
                        flush=True,
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
