"""Connected components of the near-duplicate graph by large-star / small-star rounds (Kiveris et al., 2014).

Each round is two hash-partitioned passes over the edges. A pass sees, for each node of its partition, the edges
stored at that node, so a task holds only its share of the edges:

* large-star at node u: link every larger neighbour of u to ``m(u) = min(u, neighbours of u)``;
* small-star at node u: link u and its smaller neighbours to the smallest of them.

Neither pass changes the components, and when a round changes nothing every component is a star around its
smallest node: that node is kept, every other node is removed. Node ids put the rank in the high bits and the
document's index within its rank in the low bits, so the document kept is the first one in rank order, the same
choice whatever the partitioning. Everything here works on (n, 2) uint64 arrays of ``(node, neighbour)`` rows.
"""

from __future__ import annotations

import numpy as np

from pipelines.dedup.minhash import partition_of, unique_pairs


def _group_min(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by node: the first row of each node's group and the smallest neighbour of each row's node."""
    nodes = pairs[:, 0]
    starts = np.flatnonzero(np.concatenate([[True], nodes[1:] != nodes[:-1]]))
    smallest = np.minimum.reduceat(pairs[:, 1], starts)
    counts = np.diff(np.append(starts, len(nodes)))
    return starts, np.repeat(smallest, counts)


def large_star(pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """One large-star pass over ``(node, neighbour)`` rows holding every neighbour of each node (both directions).

    Returns ``(larger node, new parent)`` rows and how many of them differ from the edge they replace.
    """
    pairs = unique_pairs(pairs)
    if not len(pairs):
        return pairs, 0
    _, smallest = _group_min(pairs)
    nodes, neighbours = pairs[:, 0], pairs[:, 1]
    parent = np.minimum(nodes, smallest)
    larger = neighbours > nodes
    out = np.stack([neighbours[larger], parent[larger]], axis=1)
    return out, int((parent[larger] != nodes[larger]).sum())


def small_star(pairs: np.ndarray) -> tuple[np.ndarray, int]:
    """One small-star pass over ``(node, smaller neighbour)`` rows.

    Returns ``(node, new parent)`` rows (the node and each of its smaller neighbours, linked to the smallest of
    them) and the number of nodes that had more than one smaller neighbour (zero: nothing changed).
    """
    pairs = unique_pairs(pairs)
    if not len(pairs):
        return pairs, 0
    starts, smallest = _group_min(pairs)
    nodes, neighbours = pairs[:, 0], pairs[:, 1]
    linked = np.concatenate([np.stack([neighbours, smallest], axis=1), np.stack([nodes, smallest], axis=1)])
    linked = linked[linked[:, 0] != linked[:, 1]]
    changed = int((np.diff(np.append(starts, len(nodes))) > 1).sum())
    return unique_pairs(linked), changed


def both_directions(edges: np.ndarray) -> np.ndarray:
    """Each edge stored at both of its ends (the input of a large-star pass)."""
    return np.concatenate([edges, edges[:, ::-1]])


def at_larger_end(edges: np.ndarray) -> np.ndarray:
    """Each edge stored at its larger end only (the input of a small-star pass)."""
    flip = edges[:, 0] < edges[:, 1]
    return np.where(flip[:, None], edges[:, ::-1], edges)


def removed_nodes(pairs: np.ndarray) -> np.ndarray:
    """After convergence: the nodes (sorted, unique) that have a smaller neighbour, i.e. are not a star's centre."""
    return np.unique(pairs[pairs[:, 1] < pairs[:, 0], 0])


def split_by_partition(pairs: np.ndarray, partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by the partition of their first column, and ``offsets`` with partition p at
    ``rows[offsets[p]:offsets[p + 1]]``."""
    part = partition_of(pairs[:, 0], partitions) if len(pairs) else np.empty(0, np.int64)
    order = np.argsort(part, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(part, minlength=partitions))]).astype(np.uint64)
    return pairs[order], offsets


def components_removed(edges: np.ndarray, partitions: int = 4, max_rounds: int = 200) -> np.ndarray:
    """All rounds in one process, partition by partition exactly as the Dask stages do: the removed nodes."""
    edges = np.asarray(edges, dtype=np.uint64).reshape(-1, 2)
    edges = edges[edges[:, 0] != edges[:, 1]]
    stored = both_directions(edges)
    for _ in range(max_rounds):
        large, large_changes = _each_partition(large_star, stored, partitions)
        small, small_changes = _each_partition(small_star, at_larger_end(large), partitions)
        stored = both_directions(small)
        if large_changes == 0 and small_changes == 0:
            return removed_nodes(stored)
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")


def _each_partition(step, pairs: np.ndarray, partitions: int) -> tuple[np.ndarray, int]:
    rows, offsets = split_by_partition(pairs, partitions)
    outputs, changes = [], 0
    for p in range(partitions):
        out, changed = step(rows[int(offsets[p]) : int(offsets[p + 1])])
        outputs.append(out)
        changes += changed
    return np.concatenate(outputs) if outputs else np.empty((0, 2), np.uint64), changes
