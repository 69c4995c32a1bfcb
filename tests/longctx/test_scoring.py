"""RULER's metrics, grouping and effective length."""

from __future__ import annotations

import pytest

from longctx.scoring import (
    aggregate,
    effective_length,
    metric_name,
    postprocess_pred,
    score_sample,
    string_match_all,
    string_match_part,
)


def test_string_match_all_is_the_fraction_of_references_found_ignoring_case():
    refs = ["4821733", "Alpha-Beta", "9912"]
    assert string_match_all("found 4821733 and alpha-beta", refs) == pytest.approx(2 / 3)
    assert string_match_all("nothing here", refs) == 0.0
    assert string_match_all("ALPHA-BETA 9912 4821733", refs) == 1.0


def test_string_match_part_is_one_when_any_reference_is_found():
    assert string_match_part("The answer is PARIS.", ["paris", "Lyon"]) == 1.0
    assert string_match_part("The answer is Rome.", ["paris", "Lyon"]) == 0.0


def test_qa_tasks_use_match_part_and_the_rest_match_all():
    assert metric_name("qa_1") == metric_name("qa_2") == "string_match_part"
    for task in ("niah_single_1", "niah_multivalue", "vt", "cwe", "fwe"):
        assert metric_name(task) == "string_match_all"
    assert score_sample("qa_1", "it was paris", ["Paris", "Lyon"]) == 100.0
    assert score_sample("niah_multivalue", "1, 2", ["1", "2", "3", "4"]) == 50.0


def test_prediction_is_cleaned_as_ruler_does():
    assert postprocess_pred("  \x00abc\x1fdef\t ") == "abc\ndef"
    # A reference split by a control character no longer matches, as in RULER.
    assert score_sample("niah_single_1", "12\x0034", ["1234"]) == 0.0


def test_empty_references_are_an_error():
    with pytest.raises(ValueError, match="at least one reference"):
        string_match_all("x", [])


def test_aggregate_groups_by_task_length_and_depth_and_averages_tasks():
    rows = [
        {"task": "a", "length": 4096, "depth": 0.0, "score": 100.0},
        {"task": "a", "length": 4096, "depth": 50.0, "score": 0.0},
        {"task": "a", "length": 4096, "depth": 50.0, "score": 100.0},
        {"task": "b", "length": 4096, "depth": None, "score": 100 / 3},
        {"task": "a", "length": 8192, "depth": 0.0, "score": 0.0},
    ]
    tasks, depths, average = aggregate(rows)
    assert tasks == {"a": {4096: 66.67, 8192: 0.0}, "b": {4096: 33.33}}
    assert depths == {"a": {4096: {0.0: 100.0, 50.0: 50.0}, 8192: {0.0: 0.0}}}
    assert average == {4096: 50.0, 8192: 0.0}


def test_effective_length_is_the_longest_length_before_the_first_failure():
    assert effective_length({4096: 95.0, 8192: 90.0, 16384: 85.0, 32768: 99.0}) == 8192
    assert effective_length({4096: 80.0, 8192: 99.0}) is None
    assert effective_length({4096: 86.0, 8192: 85.6}) == 4096  # must be above, not equal
    assert effective_length({4096: 60.0, 8192: 55.0}, threshold=50) == 8192
