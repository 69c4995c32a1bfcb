"""The fast quality filters against datatrove's, document by document: same decision, same first reason, same text."""

from __future__ import annotations

import random
import subprocess
import sys
from copy import deepcopy

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import get_filter_result
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate
from datatrove.utils.text import split_into_sentences, split_into_words
from datatrove.utils.word_tokenizers import SpaCyTokenizer

from pipelines.filters.checks import NgramTable, duplicated_ngram_chars
from pipelines.filters.steps import FAST_FILTERS, word_splitter
from pipelines.filters.words import WordSplitter
from pipelines.recipe import RecipeError, parse_recipe
from tests.pipelines.conftest import simple_recipe, train_lid_model, write_jsonl
from tests.pipelines.filter_samples import PARAMETER_SETS, REASONS, sample_documents

DATATROVE = {
    "gopher_repetition": GopherRepetitionFilter,
    "gopher_quality": GopherQualityFilter,
    "c4": C4QualityFilter,
    "fineweb_quality": FineWebQualityFilter,
}


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return sample_documents()


def fates(steps: list, docs: list[dict], batched: bool) -> dict[str, tuple]:
    """Each document's fate through a chain of filters: (step, reason) when dropped, ("kept", text) otherwise."""
    alive = [Document(text=d["text"], id=d["id"]) for d in docs]
    result = {}
    for index, step in enumerate(steps):
        decisions = step.filter_batch(alive) if batched else [step.filter(doc) for doc in alive]
        survivors = []
        for doc, decision in zip(alive, decisions, strict=True):
            keep, reason = get_filter_result(decision)
            if keep:
                survivors.append(doc)
            else:
                result[doc.id] = (index, reason)
        alive = survivors
    result.update({doc.id: ("kept", doc.text) for doc in alive})
    return result


def test_every_drop_reason_is_decided_as_datatrove_does(sample):
    seen: dict[str, set] = {kind: set() for kind in REASONS}
    for kind, params in PARAMETER_SETS:
        expected = fates([DATATROVE[kind](**params)], sample, batched=False)
        got = fates([FAST_FILTERS[kind](**params)], sample, batched=True)
        differing = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
        assert not differing, f"{kind} {params}: {differing}"
        seen[kind] |= {fate[1] for fate in expected.values() if fate[0] != "kept"}
    for kind, reasons in REASONS.items():
        assert seen[kind] == reasons, f"{kind}: the sample never shows {reasons - seen[kind]}"


def test_decisions_do_not_depend_on_the_batch_a_document_is_in(sample):
    """The n-gram rules run on whole batches: n-grams must never run from one document into the next."""
    rng = random.Random(5)
    for kind, params in PARAMETER_SETS:
        if kind in ("gopher_repetition", "gopher_quality"):
            expected = fates([DATATROVE[kind](**params)], sample, batched=False)
            for size in (1, 7, len(sample)):
                shuffled = rng.sample(sample, len(sample))
                got = {}
                for start in range(0, len(shuffled), size):
                    got.update(fates([FAST_FILTERS[kind](**params)], shuffled[start : start + size], batched=True))
                assert got == expected, (kind, params, size)


def test_the_default_chain_gives_every_document_the_same_fate(sample):
    from pipelines.recipe import DEFAULT_RECIPE, load_recipe
    from pipelines.stages import build_filters

    chains = {}
    for engine in ("fast", "datatrove"):
        recipe = load_recipe(DEFAULT_RECIPE, overrides={"filter_engine": engine}, check_paths=False)
        chains[engine] = build_filters(recipe)
    assert [s.name for s in chains["fast"]] == [s.name for s in chains["datatrove"]]
    expected = fates(chains["datatrove"], sample, batched=False)
    assert fates(chains["fast"], sample, batched=True) == expected
    assert (
        sum(fate[0] == "kept" for fate in expected.values()) >= 5
    )  # some text rewritten by C4 is compared too


def test_words_and_sentences_equal_spacys(sample):
    splitter = word_splitter("en")
    texts = [d["text"] for d in sample]
    splitter.prepare(texts)
    for text in texts:
        words = split_into_words(text)
        assert [splitter.tokens[i] for i in splitter.words(text).tolist()] == words
        assert splitter.word_count(text) == len(words)
        lines = [line.strip() for line in text.splitlines()]
        assert splitter.sentence_count(lines) == sum(len(split_into_sentences(line)) for line in lines)
    # emoticons next to each other are split chunk by chunk, not as a whole text; IS_ALPHA takes datatrove's path
    by_id = {d["id"]: d["text"] for d in sample}
    before = splitter.slow_texts
    splitter.words(by_id["emoticons"])
    assert splitter.slow_texts == before
    splitter.words(by_id["IS_ALPHA"])
    assert splitter.slow_texts == before + 1


def test_chunks_the_matcher_changed_are_split_where_they_stand():
    """spaCy's matcher merges ":" ")" inside ":)x"; a match across the space before it ("( :") can stop that."""
    splitter = WordSplitter("en")
    rng = random.Random(5)
    changing = sorted(p for p in splitter._patterns if len(p) <= 3)
    pieces = ["(", ")", ":", "x", "8", "-", "'"]
    for pattern in rng.sample(changing, 40):
        pieces += ["".join(pattern) + "x", "x" + "".join(pattern)]
    texts = [f"{a} {b}" for a in pieces for b in pieces]
    texts += [" ".join(rng.choices(pieces, k=12)) for _ in range(200)]
    texts += ["\n".join(rng.choices(texts, k=3)) for _ in range(50)]
    splitter.prepare(texts)
    ids, offsets = splitter.batch_words(texts)
    crossed = 0
    for i, text in enumerate(texts):
        words = split_into_words(text)
        crossed += words != [w for chunk in text.split() for w in split_into_words(chunk)]
        assert [splitter.tokens[t] for t in ids[offsets[i] : offsets[i + 1]].tolist()] == words, text
        assert [splitter.tokens[t] for t in splitter.words(text).tolist()] == words, text
        lines = text.splitlines()
        assert splitter.sentence_count(lines) == sum(len(split_into_sentences(line)) for line in lines)
    assert crossed >= 5  # texts where a chunk's tokens alone are not its tokens in the text
    assert splitter._chunk_matched[: splitter._n_chunks].any()


def test_filter_words_need_no_spacy_import_with_stored_rules():
    """The filters split words from the stored rules: a worker never imports spaCy (nor thinc and torch)."""
    from pipelines.spacy_rules import load_rules

    if load_rules("en") is None:  # no shipped rules for this spaCy: the split reads them from spaCy instead
        pytest.skip("no stored rules for the installed spaCy")
    code = (
        "import sys\n"
        "from pipelines.filters.steps import word_splitter\n"
        "w = word_splitter('en')\n"
        "text = \"It's 10a.m. now :) ( :)x and gunner): e.g. we can't stop.\\nA second line.\"\n"
        "assert [w.tokens[i] for i in w.words(text).tolist()][:6] == ['It', \"'s\", '10', 'a.m.', 'now', ':)']\n"
        "assert w.sentence_count(text.splitlines()) >= 2\n"
        "print(sorted(m for m in ('spacy', 'thinc', 'torch') if m in sys.modules), w.slow_texts)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] 0"


def test_paragraph_and_line_duplicates_are_datatroves():
    """The set-based duplicate count and the split that skips texts without a break equal datatrove's."""
    import re

    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates

    from pipelines.filters.checks import _split, duplicates

    rng = random.Random(3)
    reference = GopherRepetitionFilter()
    for _ in range(3000):
        text = "".join(rng.choice(["a", "bb", "\n", "\n\n", " "]) for _ in range(rng.randint(0, 14)))
        assert _split(reference.paragraph_exp, text) == reference.paragraph_exp.split(text)
        assert _split(reference._line_splitter, text) == reference._line_splitter.split(text)
        items = rng.choices(["a", "bb", "", "ccc"], k=rng.randint(0, 9))
        assert duplicates(items) == find_duplicates(items)
    assert _split(re.compile("b"), "abc") == ["a", "c"]  # another pattern is always split by it


def test_without_a_stored_rules_file_the_rules_are_read_from_spacy(monkeypatch, sample):
    """Another spaCy version has no rules file here: the splitter reads the same rules from spaCy itself."""
    import pipelines.filters.words as words_module

    monkeypatch.setattr(words_module, "load_rules", lambda language: None)
    splitter = WordSplitter("en")
    assert splitter.fast
    texts = [d["text"] for d in sample[:40]] + ["( :)x and gunner): at 10a.m. :-)"]
    ids, offsets = splitter.batch_words(texts)
    for i, text in enumerate(texts):
        assert [splitter.tokens[t] for t in ids[offsets[i] : offsets[i + 1]].tolist()] == split_into_words(text)


def test_a_full_chunk_table_is_cleared_and_words_stay_right(sample):
    """Past max_chunks the table starts over (token ids of the old generation are not reused)."""
    splitter = WordSplitter("en", max_chunks=200)
    texts = [d["text"] for d in sample]
    for start in range(0, len(texts), 7):
        batch = texts[start : start + 7]
        ids, offsets = splitter.batch_words(batch)
        for i, text in enumerate(batch):
            assert [splitter.tokens[t] for t in ids[offsets[i] : offsets[i + 1]].tolist()] == split_into_words(text)
    assert splitter.generation >= 2
    # the steps' shared words: some documents' ids kept from before the table starts over, others new
    from pipelines.filters.steps import SHARED_WORDS

    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    SHARED_WORDS.get_many(docs[:3], splitter)
    splitter._n_chunks = splitter.max_chunks + 1  # full: the next new chunk clears it
    for doc, ids in zip(docs[:9], SHARED_WORDS.get_many(docs[:9], splitter), strict=True):
        assert [splitter.tokens[t] for t in ids.tolist()] == split_into_words(doc.text)


def test_random_unicode_texts_split_as_spacy_does():
    """Scripts, symbols, emoji, soft hyphens and every kind of whitespace, mixed with special cases and URLs."""
    splitter = WordSplitter("en")
    rng = random.Random(17)
    alphabet = list("aAbZ09.,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|…’‘“”«»—–°€£²½ßüéñøЯжあ中😀🙂\u200b\u00ad")
    alphabet += [" ", " ", " ", "\t", "\n", "\xa0", "\u2003", "\x1c", "\x85", "\u2028", "\r\n"]
    alphabet += [":)", "a.m.", "e.g.", "http://x.org/a?b=c", "can't", "10km", "U.S.", "(:", "8)"]
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 50))) for _ in range(1500)]
    ids, offsets = splitter.batch_words(texts)
    for i, text in enumerate(texts):
        assert [splitter.tokens[t] for t in ids[offsets[i] : offsets[i + 1]].tolist()] == split_into_words(text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        assert splitter.sentence_count(lines) == sum(len(split_into_sentences(line)) for line in lines)


def test_duplicated_ngrams_follow_datatroves_scan_or_say_they_cannot():
    """Short words that run together ("a" "bc" / "ab" "c") are where joined and word-by-word n-grams part."""
    splitter = word_splitter("en")
    rng = random.Random(7)
    vocabulary = ["a", "b", "ab", "c", "bc", "abc", "the", "cat"]
    unproved = 0
    for _ in range(300):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 40))]
        table = NgramTable(splitter.words(" ".join(words)), splitter)
        for n in range(2, 11):
            got = duplicated_ngram_chars(table, n)
            if got is None:
                unproved += 1
            else:
                assert got == find_all_duplicate(words, n), (words, n)
    assert unproved > 0  # the check does find the lists where the shortcut would be wrong


def test_join_fix_counts_ngrams_word_by_word():
    splitter = word_splitter("en")
    words = ["ab", "c", "d", "e", "f", "went", "off", ",", "then", "a", "bc", "d", "e", "f", "came"]
    assert find_all_duplicate(words, 5) == len("abcdef")  # datatrove: "a bc d e f" repeats "ab c d e f"
    table = NgramTable(splitter.words(" ".join(words)), splitter)
    assert duplicated_ngram_chars(table, 5) is None
    assert duplicated_ngram_chars(table, 5, join_fix=True) == 0


def test_join_fix_needs_the_fast_engine(tmp_path):
    data = simple_recipe([tmp_path], tmp_path, filters=[{"gopher_repetition": {"join_fix": True}}])
    parse_recipe(data, check_paths=False)
    with pytest.raises(RecipeError, match=r"filters.0.gopher_repetition.join_fix needs filter_engine: fast"):
        parse_recipe({**data, "filter_engine": "datatrove"}, check_paths=False)
    with pytest.raises(RecipeError, match="filter_engine"):
        parse_recipe({**data, "filter_engine": "spacy"}, check_paths=False)


def test_both_engines_curate_the_same_documents_with_the_same_stats(tmp_path, dask_client, sample):
    from pipelines.runner import read_curated, run_recipe

    path = write_jsonl(tmp_path / "in" / "part.jsonl", sample)
    filters = [{"gopher_repetition": {}}, {"gopher_quality": {}}, {"c4": {}}, {"fineweb_quality": {}}]
    results = {}
    for engine in ("fast", "datatrove"):
        data = simple_recipe([path], tmp_path / engine, filters=filters, filter_engine=engine)
        timed: list[tuple[str, float]] = []
        rows = run_recipe(
            parse_recipe(data),
            client=dask_client,
            progress=False,
            on_stage=lambda stage, stats, seconds, timed=timed: timed.append((stage.name, seconds)),
        )
        # every stage that ran is reported once, in order, with its time
        assert [name for name, _ in timed] == list(dict.fromkeys(r.stage for r in rows))
        assert all(seconds > 0 for _, seconds in timed)
        curated = sorted((d["id"], d["text"]) for d in read_curated(data["output"]["path"]))
        results[engine] = (curated, [(r.step, r.seen, r.kept, r.dropped, r.detail) for r in rows])
    assert results["fast"] == results["datatrove"]
    assert results["fast"][0]  # something was kept
    steps = [row[0] for row in results["fast"][1]]
    assert steps[1:5] == ["Gopher Repetition", "Gopher Quality", "C4 Quality", "FineWeb Quality"]


def test_batched_language_id_equals_datatroves_one_by_one(tmp_path, prose_docs):
    from pipelines.filters import LocalModelLanguageFilter
    from pipelines.filters.steps import BatchLanguageFilter

    model = train_lid_model(tmp_path, prose_docs, epoch=3)
    rng = random.Random(3)
    docs = [Document(text=d["text"][:1500], id=d["id"]) for d in prose_docs[20:40]]
    for doc in docs[::3]:
        letters = list(doc.text)
        rng.shuffle(letters)
        doc.text = "".join(letters)
    for kwargs in (
        {"languages": ["en"], "language_threshold": 0.6},
        {"languages": None, "keep_top_pairs_threshold": 0.1},
    ):
        one_by_one, batched = deepcopy(docs), deepcopy(docs)
        reference = LocalModelLanguageFilter(str(model), **kwargs)
        ours = BatchLanguageFilter(str(model), **kwargs)
        expected = [bool(list(reference.run([doc]))) for doc in one_by_one]
        got = [bool(list(ours.run([doc]))) for doc in batched[:1]]  # loads the model
        got += ours.filter_batch(batched[1:])
        assert [bool(g) for g in got] == expected
        assert [d.metadata for d in batched] == [d.metadata for d in one_by_one]
        assert sum(expected) > 0 and (kwargs["languages"] is None or sum(expected) < len(docs))


def _stress_chunks() -> list[str]:
    """Chunks around the one-suffix rule's edges: quotes, brackets and stops around words, numbers with units,
    contractions and abbreviations (special cases), emoticons, URLs, hyphenated and dotted words, paths."""
    cores = [
        "word",
        "Word",
        "dogs",
        "10",
        "3.5",
        "10km",
        "can't",
        "U.S.",
        "e.g.",
        "a.m",
        "a.m.",
        "don",
        "'s",
        "n't",
        "dyn-o-mite",
        "x.y",
        "http://example.com/a",
        "www.example.org",
        "C++",
        "co-op",
        "i",
        "A",
        "-",
        "",
        "...",
        "°C",
        "$",
        "5$",
        "etc",
        "Mr",
        "Mr.",
        "vs",
        "'",
        "’",
        "12:30",
        "ü",
        "#tag",
    ]
    prefixes = ["", "(", '"', "'", "[", "“", "$", "#", "...", "((", "\"'", "¿", "-", "*"]
    suffixes = [
        "",
        ",",
        ".",
        ";",
        ":",
        "!",
        "?",
        ")",
        '"',
        "'",
        "...",
        ".)",
        '",',
        "'s",
        "'s.",
        "km",
        ")!",
        "%",
        "”",
        ":)",
        "''",
        "-",
        "—",
        "…",
        '".',
    ]
    return sorted({p + c + s for p in prefixes for c in cores for s in suffixes} - {""})


def test_the_affix_shapes_tokenize_as_spacy_does_or_leave_the_chunk_to_spacy():
    splitter = WordSplitter("en")  # a fresh one: this test may not lean on chunks cached by others
    tokenizer = SpaCyTokenizer("en").tokenizer.tokenizer
    chunks = _stress_chunks()
    simple, covered, parts, left = splitter._shapes.split(chunks)
    assert sorted(simple + covered + left) == chunks
    for chunk in simple:
        assert [t.text for t in tokenizer(chunk)] == [chunk]
    for chunk, tokens in zip(covered, parts, strict=True):
        assert tokens == [t.text for t in tokenizer(chunk)], chunk
    # the shapes cover one-character affixes around a word, cut at its infixes; special cases, unit suffixes,
    # longer affixes and deeper nesting go to spaCy
    assert {"word,", "dogs)", "word'", "word!", "10,", "(word", "(word)", "'word'", "word.)", "[10"} <= set(covered)
    assert {"dyn-o-mite.", "(co-op)", "x.y,"} <= set(covered)
    assert {"can't.", "Mr.", "e.g.", "10km.", ":)", '"word".', "word...", "'s.", "((word"} <= set(left)
    assert len(covered) > 300 and len(left) > 1000
    # and the words of whole texts made of these chunks are spaCy's, whichever path each chunk took
    rng = random.Random(11)
    texts = [" ".join(rng.sample(chunks, 30)) for _ in range(60)]
    splitter.prepare(texts)
    for text in texts:
        assert [splitter.tokens[i] for i in splitter.words(text).tolist()] == split_into_words(text)


def test_sentences_of_lines_with_special_cases_are_counted_on_tokens_in_context():
    splitter = WordSplitter("en")
    lines = [
        "It works :) and then it stops. Then it goes on!",
        "A plain line. With two sentences.",
        "Crossing a line boundary :",
        ") is not a special case. Really not.",
        "Ends with one :) Starts another.",
        "A merged smile ( :)x stops here. Does it?",
    ]
    assert len(splitter._fast_chunks("\n".join(lines))[2])  # a chunk the matcher changed on its own
    before = splitter.slow_texts
    assert splitter.sentence_count(lines) == sum(len(split_into_sentences(line)) for line in lines)
    assert splitter.slow_texts == before  # the changed chunk is counted where it stands, without datatrove


def _affix_probe_strings() -> list[str]:
    """The stress chunks, their cores and tails, odd whitespace, and random strings over affix characters."""
    rng = random.Random(13)
    alphabet = list("aZ9.'’-…:;,()[]\"$€°Cckm²s/+*^#%!?_~<>=") + ["\n", " ", "ü", "ß", "Я"]
    strings = set(_stress_chunks())
    strings |= {c[1:] for c in strings} | {c[:-1] for c in strings} | {c + "\n" for c in list(strings)[:500]}
    strings |= {"".join(rng.choices(alphabet, k=rng.randint(0, 12))) for _ in range(5000)}
    strings |= {"." * k for k in range(6)} | {"word" + "." * k for k in range(6)} | {"", "\n", " "}
    return sorted(strings)


def test_faster_affix_searches_answer_as_spacys_own():
    """The tail-cached suffix search and the first-character guards return what spaCy's regexes return."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    from pipelines.filters.affixes import (
        guarded_infix_finditer,
        guarded_prefix_search,
        tail_suffix_search,
        untouchable_characters,
    )

    tokenizer = SpaCyTokenizer("en").tokenizer.tokenizer
    prefix, suffix, infix = tokenizer.prefix_search, tokenizer.suffix_search, tokenizer.infix_finditer
    fast_prefix, fast_suffix = guarded_prefix_search(prefix), tail_suffix_search(suffix)
    fast_infix = guarded_infix_finditer(infix)
    # each one took its fast form (the rules have the shape the shortcuts need)
    assert fast_prefix is not prefix and fast_suffix is not suffix and fast_infix is not infix
    assert fast_suffix.unbounded == 1  # two or more dots: searched on the whole string

    def span(match):
        return None if match is None else (match.start(), match.end())

    for _ in range(2):  # a second round answers from the cache
        for text in _affix_probe_strings():
            assert span(fast_prefix(text)) == span(prefix(text)), text
            assert span(fast_suffix(text)) == span(suffix(text)), text
            assert [span(m) for m in fast_infix(text)] == [span(m) for m in infix(text)], text
    # a string holding none of the characters the rules need is matched by none of them
    untouchable = untouchable_characters(fast_prefix, fast_suffix, fast_infix)
    assert untouchable is not None and not untouchable.isdisjoint("10km")
    clear = [t for t in _affix_probe_strings() + ["word", "Straße", "слово", "zażółć"] if untouchable.isdisjoint(t)]
    assert len(clear) > 100
    for text in clear:
        assert prefix(text) is None and suffix(text) is None and next(infix(text), None) is None, text


def test_batch_words_equal_datatroves_words_in_any_batch(sample):
    from pipelines.filters.words import poly_hash

    splitter = WordSplitter("en")
    texts = [d["text"] for d in sample] + [" ".join(_stress_chunks()[::7]), "", "   \n "]
    rng = random.Random(2)
    for size in (1, 5, len(texts)):
        order = rng.sample(range(len(texts)), len(texts))
        for start in range(0, len(order), size):
            chosen = order[start : start + size]
            ids, offsets = splitter.batch_words([texts[i] for i in chosen])
            for k, i in enumerate(chosen):
                words = [splitter.tokens[t] for t in ids[offsets[k] : offsets[k + 1]].tolist()]
                assert words == split_into_words(texts[i]), texts[i][:80]
    # the per-token properties, computed for many tokens at once, against their one-token definitions
    from datatrove.utils.text import PUNCTUATION_SET

    tokens = splitter.tokens
    assert splitter.hash[: len(tokens)].tolist() == [poly_hash(t) for t in tokens]
    assert splitter.length[: len(tokens)].tolist() == [len(t) for t in tokens]
    assert splitter.non_symbol[: len(tokens)].tolist() == [any(c not in PUNCTUATION_SET for c in t) for t in tokens]
    assert splitter.has_alpha[: len(tokens)].tolist() == [any(c.isalpha() for c in t) for t in tokens]
