"""The fast MinHash path against datatrove's own: XXH64, shingles (spaCy's word split), signatures, band keys."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest
import xxhash
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.utils.text import simplify_text

from pipelines.dedup.kernels import xxh64_ranges as xxh64_compiled
from pipelines.dedup.minhash import band_edges, band_keys, permutations, signatures, signatures_numpy
from pipelines.dedup.piece_table import TextBatch
from pipelines.dedup.shingles import Shingler, simplified_batch, simplify_to_bytes
from pipelines.dedup.xxh64 import xxh64_ranges as xxh64_numpy

# what spaCy splits after simplify_text, and what simplify_text itself must get right
TRICKY = [
    "We cannot stop, we're gonna go and we gotta see it; don't wanna miss it, I'd say, lemme see",
    "It weighs 3.5kg and runs 10km at 25°C, costs $12,000.50 or 9€ per 100m² in 2023.",
    "Café naïve résumé: ÀÉÎÕÜ — coöperate Ångström the ﬁne ligature, the Kelvin sign K is here",
    "Сегодня 5 декабря: Москва, Санкт-Петербург — «привет»! Ελληνικά κείμενα με τόνους ά έ ή",
    "東京は日本の首都です。人口は約1400万人、面積は2194平方キロメートル。 中文文本，没有空格！",
    "emoji 😀 and 👍🏽 thumbs, flags 🇫🇷, a lone mark \u0301 here and e\u0301 there, zero\u200bwidth",
    "tabs\tand\nnew lines\r\nand\u00a0no-break\u2003em spaces  and\u3000ideographic",
    "URLs like https://example.com/a?b=c and e-mail me@example.org and C++ or c# or x86-64 or 5'11\"",
    "U.S.A. e.g. i.e. a.m. p.m. Mr. Dr. St. No. vs. etc. Inc. Ltd. 'tis 'twas o'clock rock'n'roll",
    "one two three four",  # fewer words than an n-gram: no shingles
    "",
    "١٢٣ ٤٥٦ arabic digits 3,14 and १२३ devanagari १२.५ next to words in a sentence here",
]


@pytest.fixture(scope="module")
def reference() -> MinhashDedupSignature:
    return MinhashDedupSignature("memory://reference", config=MinhashConfig())


@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
def test_xxh64_of_ranges_equals_xxhash(implementation):
    rng = random.Random(3)
    data = bytes(rng.randrange(256) for _ in range(3000))
    # every branch of XXH64: each length 0-100 (stripes of 32, then 8-, 4- and 1-byte tails), and long ranges
    lengths = np.array(list(range(101)) * 3 + [rng.randrange(101, 900) for _ in range(300)])
    starts = np.array([rng.randrange(len(data) - n + 1) for n in lengths])
    seed = 0 if implementation == "numpy" else rng.randrange(1 << 64)
    if implementation == "numpy":
        got = xxh64_numpy(np.frombuffer(data, dtype=np.uint8), starts, starts + lengths, seed=seed)
    else:
        got = xxh64_compiled(np.frombuffer(data, dtype=np.uint8), starts, starts + lengths, np.uint64(seed))
    want = [xxhash.xxh64_intdigest(data[s : s + n], seed=seed) for s, n in zip(starts, lengths, strict=True)]
    assert got.tolist() == want


def test_ngram_hashes_are_xxh64_of_the_joined_words():
    rng = random.Random(4)
    vocab = ["a", "bb", "ccc", "dddd", "e" * 9, "f" * 31, "é", "日本語", "0"]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randrange(12))) for _ in range(300)]
    batch = Shingler(n_grams=3).hash_ngrams(TextBatch.of([t.encode("utf-8") for t in texts]))
    for i, text in enumerate(texts):
        words = text.split()
        want = [xxhash.xxh64_intdigest(" ".join(words[k : k + 3]).encode()) for k in range(len(words) - 2)]
        assert batch.hashes[batch.offsets[i] : batch.offsets[i + 1]].tolist() == want


def test_batch_simplification_equals_simplify_text():
    rng = random.Random(6)
    alphabet = [chr(c) for c in range(128)] + list("0123456789.,  \n\t") * 8  # every ASCII byte; numbers often
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(60))) for _ in range(600)]
    texts += ["1.5 2,5 3. .4 5,,6 7.8.9 10,000.25 a1b 1a", " \t lead and trail \n", "", "   "]
    # non-ASCII: every kind of whitespace, punctuation, combining marks (lone too), digits of other scripts
    unicode = list("aé e\u0301\u0301ÀßİK\u00a0\u2003\u3000\u200b\u2028\x85«»—，。１٣٫१.,0 日本😀\U0001f3fd") + alphabet
    texts += ["".join(rng.choice(unicode) for _ in range(rng.randrange(60))) for _ in range(600)] + TRICKY
    rng.shuffle(texts)
    got, want = simplified_batch(texts).texts(), [simplify_text(t).encode("utf-8") for t in texts]
    assert [g for g, t in zip(got, texts, strict=True) if t.isascii()] == [
        w for w, t in zip(want, texts, strict=True) if t.isascii()
    ]
    # elsewhere the same words (where a lone combining mark is dropped, simplify_text leaves two spaces)
    assert got == [b" ".join(w.split()) for w in want] == [simplify_to_bytes(t) for t in texts]
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate: datatrove's hashing fails on it too
        simplified_batch(["a lone \ud800 surrogate, é"])


def test_shingles_and_signatures_equal_datatrove(reference, prose_texts):
    rng = random.Random(5)
    texts = TRICKY + [t[:3000] for t in prose_texts[::12]]
    texts += [" ".join(rng.sample(t.split(), min(60, len(t.split())))) for t in texts[:6]]
    shingler = Shingler()
    batch = shingler.shingles(texts)
    a, b = permutations(reference.num_hashes, 1)
    sigs = signatures(batch.hashes, batch.offsets, a, b)
    assert signatures_numpy(batch.hashes, batch.offsets, a, b, rows_per_chunk=97).tolist() == sigs.tolist()
    assert shingler.tokenizer.exact
    tokenizer = shingler.tokenizer  # both kinds of piece were met
    assert tokenizer.table.count > 100 and 0 < tokenizer.table.splits < tokenizer.table.count
    row = 0
    for i, text in enumerate(texts):
        want = reference.get_shingles(text).reshape(-1)
        assert batch.hashes[batch.offsets[i] : batch.offsets[i + 1]].tolist() == want.tolist(), text[:60]
        if want.size:
            assert sigs[row].tolist() == np.concatenate(reference.get_signature(want[:, None])).tolist()
            row += 1
    assert row == len(sigs) < len(texts)  # the short and empty texts have no signature, as in datatrove


def test_band_keys_match_exactly_when_a_band_is_equal():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 1 << 61, size=(400, 14 * 8), dtype=np.uint64)
    sigs[1, 8:16] = sigs[0, 8:16]  # docs 0 and 1 share band 1
    sigs[2, 16:24] = sigs[0, 8:16]  # doc 2 has doc 0's band 1 values, but in band 2
    k1, k2 = band_keys(sigs, 14)
    keys = set(zip(k1.reshape(-1).tolist(), k2.reshape(-1).tolist(), strict=True))
    assert len(keys) == 400 * 14 - 1
    nodes = np.repeat(np.arange(400, dtype=np.uint64) + 7, 14)
    assert band_edges(k1.reshape(-1), k2.reshape(-1), nodes).tolist() == [[8, 7]]


@pytest.mark.parametrize("implementation", [signatures, signatures_numpy])
def test_min_hashes_equal_plain_modulo_even_at_the_edge_of_the_prime(implementation):
    a, b = permutations(112, 1)
    prime = (1 << 61) - 1
    rng = np.random.default_rng(2)
    hashes = list(rng.integers(0, 1 << 63, 300, dtype=np.uint64))
    j = next(i for i in range(112) if int(a[i]) % 2)  # an odd multiplier can be inverted modulo 2^64
    for target in (prime, prime + 3, (1 << 64) - 1):  # a * x + b wraps to these: folded sums reach p and above
        hashes.append(np.uint64((target - int(b[j])) * pow(int(a[j]), -1, 1 << 64) % (1 << 64)))
    hashes = np.array(hashes, dtype=np.uint64)
    offsets = np.array([0, 100, 100, 299, 300, 301, 302, 303])
    with np.errstate(over="ignore"):
        plain = (hashes[:, None] * a + b) % np.uint64(prime)
    want = [plain[lo:hi].min(axis=0) for lo, hi in zip(offsets[:-1], offsets[1:], strict=True) if hi > lo]
    got = implementation(hashes, offsets, a, b)
    assert got.tolist() == signatures_numpy(hashes, offsets, a, b, rows_per_chunk=64).tolist()
    assert got.tolist() == np.array(want).tolist()
    assert got[-3:, j].tolist() == [0, 3, ((1 << 64) - 1) % prime]


def test_kernels_still_work_where_no_cache_folder_is_writable():
    # numba finds no place for its cache (no locator accepts the module): the kernels compile in the process.
    # Emptying numba's list of cache locators stands in for read-only folders, which root (as here) can write.
    code = (
        "import numba.core.caching as caching\n"
        "caching.CacheImpl._locator_classes = []\n"
        "import numpy as np, xxhash\n"
        "from pipelines.dedup import kernels\n"
        "data = np.frombuffer(b'no cache for these kernels', dtype=np.uint8)\n"
        "got = kernels.xxh64_ranges(data, np.array([0, 3]), np.array([26, 8]), np.uint64(0))\n"
        "print(got.tolist() == [xxhash.xxh64_intdigest(data[0:26]), xxhash.xxh64_intdigest(data[3:8])],"
        " type(kernels.xxh64_ranges._cache).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "NullCache"]
