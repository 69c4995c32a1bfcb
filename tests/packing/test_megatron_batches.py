"""Megatron THD micro-batches from our shards, checked against megatron-core's own code on CPU."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from packing.stream import ShardStream
from tests.packing import test_stream as shared

torch = pytest.importorskip("torch")
pytest.importorskip("megatron.core")

from packing.megatron import megatron_collate, megatron_loader, packed_seq_params  # noqa: E402
from packing.torch import to_device  # noqa: E402
from tests.packing.test_torch import assert_same_batch  # noqa: E402

prose_shards = shared.prose_shards
prose_rows = shared.prose_rows


def megatron_seq_idx_rule():
    """Megatron's own `MambaMixer._create_packed_seq_idx`, taken from the installed source.

    Importing `megatron.core.ssm.mamba_mixer` needs triton (GPU only), so the method is compiled alone from
    the file megatron-core ships; it uses only torch and the PackedSeqParams it is given.
    """
    import megatron.core

    path = Path(inspect.getfile(megatron.core)).parent / "ssm" / "mamba_mixer.py"
    tree = ast.parse(path.read_text())
    method = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name == "_create_packed_seq_idx"
    )
    namespace = {"torch": torch, "PackedSeqParams": object}
    exec(compile(ast.Module([method], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["_create_packed_seq_idx"]


def sample_rows(folder: Path, count: int) -> list[dict]:
    """Rows with several documents and a padding tail, the interesting case."""
    out = []
    for s in ShardStream(folder, seed=4, with_index=True):
        if len(s["doc_lengths"]) > 1 and sum(s["doc_lengths"]) < shared.SEQ_LEN:
            out.append(s)
        if len(out) == count:
            return out
    raise AssertionError("fixture lacks rows with several documents")


@pytest.mark.parametrize("cp_size", [1, 2, 4])
def test_thd_batch_builds_a_real_packed_seq_params(prose_shards: Path, cp_size: int) -> None:
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.utils import get_thd_batch_on_this_cp_rank

    rows = sample_rows(prose_shards, 3)
    batch = megatron_collate(rows, cp_size=cp_size, pad_id=0)
    docs = [d for s in rows for d in np.split(s["input_ids"], np.cumsum(s["doc_lengths"]))[:-1] if len(d)]
    cu, cu_padded = batch["cu_seqlens"], batch["cu_seqlens_padded"]
    assert cu.dtype == cu_padded.dtype == torch.int32 and batch["tokens"].dtype == torch.int32
    assert np.diff(cu.numpy()).tolist() == [len(d) for d in docs]
    padded = np.diff(cu_padded.numpy())
    assert (padded % (2 * cp_size if cp_size > 1 else 1) == 0).all() and (padded >= np.diff(cu.numpy())).all()
    assert batch["tokens"].shape == (1, int(cu_padded[-1]))
    tokens, labels, mask = (
        batch["tokens"][0].numpy(),
        batch["labels"][0].numpy(),
        batch["loss_mask"][0].numpy(),
    )
    for k, doc in enumerate(docs):
        lo = int(cu_padded[k])
        np.testing.assert_array_equal(tokens[lo : lo + len(doc)], doc.astype(np.int32))
        np.testing.assert_array_equal(labels[lo : lo + len(doc) - 1], doc[1:].astype(np.int32))
        assert (
            mask[lo : lo + len(doc) - 1].all() and not mask[lo + len(doc) - 1 : int(cu_padded[k + 1])].any()
        )
        assert batch["position_ids"][0, lo : lo + len(doc)].tolist() == list(range(len(doc)))

    # megatron-core's own THD path (context-parallel size 1 on this CPU) builds PackedSeqParams from it
    plain = {k: v for k, v in batch.items() if k in ("tokens", "labels", "loss_mask", "position_ids")}
    _, params = get_thd_batch_on_this_cp_rank(plain, cu, cu_padded, batch["max_seqlen"], cp_size=1, cp_rank=0)
    ours = packed_seq_params(batch)
    assert isinstance(params, PackedSeqParams) and isinstance(ours, PackedSeqParams)
    assert params.qkv_format == ours.qkv_format == "thd"
    assert torch.equal(params.cu_seqlens_q, ours.cu_seqlens_q) and torch.equal(
        params.cu_seqlens_kv_padded, ours.cu_seqlens_kv_padded
    )
    assert params.max_seqlen_q == ours.max_seqlen_q == int(padded.max())

    # Mamba: our seq_idx is what megatron's mixer derives from the same PackedSeqParams
    rule = megatron_seq_idx_rule()
    assert torch.equal(rule(None, ours, batch["tokens"].shape[1]), batch["seq_idx"])


@pytest.mark.parametrize("cp_size", [1, 2, 4])
def test_compact_thd_batch_expands_on_the_device_to_the_full_one(prose_shards: Path, cp_size: int) -> None:
    samples = list(ShardStream(prose_shards, rank=2, world_size=3, seed=6, with_index=True))
    assert any(s["is_padding"] for s in samples)
    for batch in (samples[:8], samples[8:9], samples[-6:]):
        compact = megatron_collate(batch, cp_size=cp_size, pad_id=7, compact=True)
        assert set(compact) >= {"tokens", "cu_seqlens", "cu_seqlens_padded"} and "labels" not in compact
        with pytest.raises(KeyError, match="to_device"):
            compact["loss_mask"]
        full = megatron_collate(batch, cp_size=cp_size, pad_id=7)
        assert_same_batch(to_device(compact, "cpu"), to_device(full, "cpu"))


def reference_thd(samples: list[dict], cp_size: int, pad_id: int) -> dict[str, np.ndarray]:
    """The THD micro-batch written document by document, to check the vectorized collate against."""
    multiple = 2 * cp_size if cp_size > 1 else 1
    out: dict[str, list] = {k: [] for k in ("tokens", "labels", "loss_mask", "position_ids", "seq_idx")}
    cu, cu_padded = [0], [0]
    for s in samples:
        row, at = np.asarray(s["input_ids"]).astype(np.int64), 0
        for n in [int(x) for x in s["doc_lengths"] if x > 0]:
            doc, at = row[at : at + n], at + n
            padded = -(-n // multiple) * multiple
            tokens, labels = np.full(padded, pad_id), np.full(padded, pad_id)
            tokens[:n], labels[: n - 1] = doc, doc[1:]
            loss = np.zeros(padded, dtype=np.float32)
            loss[: n - 1] = 0.0 if s.get("is_padding", False) else 1.0
            for key, value in zip(
                out,
                (tokens, labels, loss, np.arange(padded), np.full(padded, len(cu) - 1)),
                strict=True,
            ):
                out[key].append(value)
            cu.append(cu[-1] + n)
            cu_padded.append(cu_padded[-1] + padded)
    batch = {k: np.concatenate(v) for k, v in out.items()}
    return batch | {"cu_seqlens": np.array(cu), "cu_seqlens_padded": np.array(cu_padded)}


@pytest.mark.parametrize("cp_size", [1, 2, 4])
def test_vectorized_thd_batch_equals_the_document_by_document_reference(
    prose_shards: Path, cp_size: int
) -> None:
    samples = list(ShardStream(prose_shards, rank=2, world_size=3, seed=6, with_index=True))
    assert any(s["is_padding"] for s in samples)
    for batch in (samples[:8], samples[8:9], samples[-6:]):
        got = megatron_collate(batch, cp_size=cp_size, pad_id=7)
        want = reference_thd(batch, cp_size, pad_id=7)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key].reshape(-1).numpy(), value, err_msg=key)
        assert int(got["max_seqlen"][0]) == int(np.diff(want["cu_seqlens_padded"]).max())
        assert got["loss_mask"].dtype == torch.float32 and got["tokens"].dtype == torch.int32


def test_loader_carries_int32_across_workers_and_widens_on_the_device(prose_shards: Path) -> None:
    stream = ShardStream(prose_shards, rank=1, world_size=2, seed=3, with_index=True)
    loader = megatron_loader(stream, rows_per_micro_batch=2, cp_size=2, num_workers=2)
    reference = [s for s in ShardStream(prose_shards, rank=1, world_size=2, seed=3, with_index=True)]
    for i, batch in enumerate(loader):
        assert batch["tokens"].dtype == torch.int32 and batch["cu_seqlens"].dtype == torch.int32
        assert "labels" not in batch  # compact by default: built by to_device
        expected = megatron_collate(reference[2 * i : 2 * i + 2], cp_size=2, pad_id=loader.collate_fn.pad_id)
        on_device = to_device(batch, "cpu")
        assert_same_batch(on_device, to_device(expected, "cpu"))
        assert on_device["tokens"].dtype == torch.int64 and on_device["cu_seqlens"].dtype == torch.int32
        if i == 20:
            break
    state = loader.state_dict()
    assert state["consumed"] == 2 * 2 * 21
