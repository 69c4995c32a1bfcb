"""spaCy's word split from stored rules (no spaCy import) against spaCy's own tokenizer, and the version fallback."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from datatrove.utils.word_tokenizers import load_word_tokenizer

from pipelines import spacy_rules
from pipelines.dedup import shingles
from pipelines.dedup.piece_table import TextBatch
from pipelines.dedup.shingles import PieceTokenizer, simplify_to_bytes
from pipelines.spacy_rules import (
    StoredRules,
    extract_rules,
    installed_spacy_version,
    load_rules,
    write_rules,
)

UNITS = "km km² km³ m m² m³ dm cm mm nm g mg µg kg t lb oz ms kmh mph hpa pa mbar mb kb gb tb k th st nd rd am pm s"
# characters simplify_text leaves in place that spaCy's prefix, suffix or infix rules act on
SURVIVING_SYMBOLS = "‘’´`°®©¦±¼½²³¹µ¶·¿¡£¥€$฿₽¤§¨ª¬¯×÷└├──│▶♟😀👍🏽ʼˈ"


@pytest.fixture(scope="module")
def spacy_tokenizer():
    return load_word_tokenizer("en").tokenizer.tokenizer


@pytest.fixture(scope="module")
def fresh_rules(tmp_path_factory) -> StoredRules:
    folder = tmp_path_factory.mktemp("rules")
    write_rules("en", folder)
    rules = load_rules("en", folder)
    assert rules is not None
    return rules


def stress_pieces(spacy_tokenizer) -> list[str]:
    """Pieces of simplified text that reach spaCy's rules, and ordinary ones around them."""
    pieces: set[str] = set()
    for key in spacy_tokenizer.rules:  # every special case, as it is and as simplify_text leaves it
        pieces.add(key)
        pieces.update(simplify_to_bytes(key).decode("utf-8").split())
    for unit in UNITS.split():
        pieces.update({f"0{unit}", f"00{unit}", f"{unit}0", f"a0{unit}", f"0{unit}s", f"0.0{unit}"})
    rng = random.Random(11)
    alphabet = "abcdefghijklmnopqrstuvwxyz0" + "éüßøæñçğışžłđþðœ" + "дяжλωאبनक" + SURVIVING_SYMBOLS
    for _ in range(6000):
        pieces.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))))
    for symbol in SURVIVING_SYMBOLS:
        for word in ("s", "see", "cannot", "0", "0km", "gonna", "x"):
            pieces.update({symbol + word, word + symbol, word + symbol + word, symbol + word + symbol})
    for key in list(spacy_tokenizer.rules)[::7]:  # special cases inside affixes
        pieces.update({"‘" + key, key + "°", "°" + key + "’"})
    pieces.update({"0", "00", "0a0", "a" * 300, "0" * 200, "ab0" * 90, "thequickbrownfox" * 20})
    pieces.update({"http", "https", "wwwexamplecom", "examplecom", "xn--bcher-kva"})
    return sorted(p for p in pieces if p and not any(c.isspace() for c in p))


def test_stored_rules_split_equals_spacy(spacy_tokenizer, fresh_rules):
    pieces = stress_pieces(spacy_tokenizer)
    split, left_to_spacy = 0, 0
    for piece in pieces:
        want = [t.text for t in spacy_tokenizer(piece)]
        got = fresh_rules.split(piece)
        if got is None:
            left_to_spacy += 1
            continue
        assert got == want, piece
        assert fresh_rules.plainly_one_word(piece) <= (want == [piece]), piece
        split += len(want) > 1
    # the set reaches every kind of rule, and the rules decide most of it themselves (what they leave to spaCy is
    # a piece holding the tokens of a special case with punctuation, which simplified text rarely has)
    assert split > 1000 and left_to_spacy < len(pieces) // 10


def test_shipped_rules_are_those_of_installed_spacy():
    version = installed_spacy_version()
    shipped = spacy_rules.rules_path("en", version)
    if shipped.is_file():
        assert json.loads(shipped.read_text(encoding="utf-8")) == json.loads(
            json.dumps(extract_rules("en"), ensure_ascii=False)
        )
        assert PieceTokenizer().rules is not None
    else:  # a spaCy newer than the shipped rules: every piece goes through spaCy
        assert PieceTokenizer().rules is None


def test_piece_tokenizer_with_rules_equals_spacy_on_texts(spacy_tokenizer, fresh_rules):
    texts = [
        "we cannot stop we re gonna go 0km and 0kg ‘self ‘see ’s 0°c café naïve °f u® a0t",
        "‘standard ‘signal lemme see gotta wanna 0mb 0gb 0am 0pm dont can t ‘ll 0th 0st ¥0 €0 0€",
        " ".join(stress_pieces(spacy_tokenizer)[::13]),
    ]
    tokenizer = PieceTokenizer(rules=fresh_rules)
    got = [j.split() for j in tokenizer.joined(TextBatch.of([t.encode("utf-8") for t in texts])).texts()]
    want = [[t.text.encode("utf-8") for t in spacy_tokenizer(text) if t.text.strip()] for text in texts]
    assert got == want


def test_version_mismatch_falls_back_to_spacy(monkeypatch, tmp_path, spacy_tokenizer):
    data = extract_rules("en")
    data["spacy_version"] = "0.0.1"  # a file whose content is for another spaCy than its name says
    (tmp_path / f"en-{installed_spacy_version()}.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_rules("en", tmp_path) is None
    assert load_rules("en", version="0.0.1") is None

    monkeypatch.setattr(shingles, "load_rules", lambda language: load_rules(language, tmp_path))
    tokenizer = PieceTokenizer()
    assert tokenizer.rules is None and tokenizer.exact
    text = "we cannot go 0km ‘self and gonna see"
    assert [j.split() for j in tokenizer.joined(TextBatch.of([text.encode("utf-8")])).texts()] == [
        [t.text.encode("utf-8") for t in spacy_tokenizer(text) if t.text.strip()]
    ]


def test_signatures_need_no_spacy_import_when_rules_decide():
    code = (
        "import sys\n"
        "from pipelines.dedup.shingles import Shingler\n"
        "s = Shingler()\n"
        "b = s.shingles(['We cannot stop, we are gonna go 10km at 25°C for ‘self and café naïve words here'])\n"
        "assert len(b.hashes) > 5 and s.tokenizer.rules is not None\n"
        "print(sorted(m for m in ('spacy', 'thinc', 'torch') if m in sys.modules))\n"
    )
    if load_rules("en") is None:  # no shipped rules for this spaCy: the fallback test covers it
        return
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
