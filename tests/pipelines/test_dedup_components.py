"""Connected components by large-star/small-star rounds against a single-process union-find."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipelines.dedup.components import components_removed, large_star, small_star


def union_find_removed(edges: list[tuple[int, int]]) -> list[int]:
    """The reference: union-find over the same edges, keeping the smallest node of each component."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return sorted(x for x in parent if find(x) != x)


def random_graph(rng: random.Random) -> list[tuple[int, int]]:
    """Chains, stars, cycles, long paths and random edges over node ids shaped like (rank << 32 | index)."""
    nodes = [(rng.randrange(64) << 32) | rng.randrange(1 << 20) for _ in range(rng.randrange(2, 500))]
    nodes = list(dict.fromkeys(nodes))
    edges: list[tuple[int, int]] = []
    for _ in range(rng.randrange(1, 6)):
        shape = rng.choice(["chain", "star", "cycle", "path", "random"])
        part = rng.sample(nodes, rng.randrange(2, len(nodes) + 1) if len(nodes) > 2 else 2)
        if shape == "chain":  # in sorted order: the case that needs the most rounds
            part.sort(reverse=rng.random() < 0.5)
            edges += list(zip(part[:-1], part[1:], strict=True))
        elif shape == "path":
            edges += list(zip(part[:-1], part[1:], strict=True))
        elif shape == "star":
            edges += [(part[0], x) if rng.random() < 0.5 else (x, part[0]) for x in part[1:]]
        elif shape == "cycle":
            edges += list(zip(part, part[1:] + part[:1], strict=True))
        else:
            edges += [tuple(rng.sample(nodes, 2)) for _ in range(len(part))]
    edges += [(x, x) for x in nodes[:3]]  # self loops change nothing
    return edges


@pytest.mark.parametrize("seed", range(6))
def test_removed_set_equals_union_find_on_random_graphs(seed):
    rng = random.Random(seed)
    for _ in range(25):
        edges = random_graph(rng)
        got = components_removed(np.array(edges, dtype=np.uint64), partitions=rng.randrange(1, 9))
        assert got.tolist() == union_find_removed(edges)


def test_long_path_and_duplicate_edges():
    order = np.random.default_rng(1).permutation(5000).astype(np.uint64)
    path = np.stack([order[:-1], order[1:]], axis=1)
    edges = np.concatenate([path, path[:, ::-1], path[:100]])
    got = components_removed(edges, partitions=5)
    assert got.tolist() == list(range(1, 5000))


def test_passes_report_changes_only_when_the_graph_is_not_yet_stars():
    star = np.array([[1, 5], [5, 1], [1, 9], [9, 1]], dtype=np.uint64)  # both directions, centred on 1
    assert large_star(star)[1] == 0
    assert small_star(np.array([[5, 1], [9, 1]], dtype=np.uint64))[1] == 0
    out, changes = small_star(np.array([[9, 1], [9, 5]], dtype=np.uint64))  # 9 has two smaller neighbours
    assert changes == 1 and sorted(map(tuple, out.tolist())) == [(5, 1), (9, 1)]
