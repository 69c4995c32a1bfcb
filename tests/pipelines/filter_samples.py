"""A small sample of documents for the filter tests: real prose (Python's documentation topics) and documents
built from it so that every drop reason of the four quality filters occurs."""

from __future__ import annotations

from tests.conftest import python_prose

# plain English written for these tests: documents made of it pass every filter
PLAIN_SENTENCES = """
The river rises in the hills to the north and reaches the sea after a slow journey through farmland.
Early settlers built their houses close to the water, because the fields there were easy to plough.
Every spring the melting snow raised the level of the river and flooded the lower meadows for weeks.
The town council eventually paid for a stone embankment that still protects the market square today.
Fishing boats once crowded the harbour, although most of them have since been replaced by yachts.
A ferry crosses to the island twice a day in summer and once a day during the quiet winter months.
Visitors who arrive by train can walk from the station to the old bridge in about twenty minutes.
The museum beside the bridge explains how the mills worked and why so many of them closed in the end.
Children from the local school help to clean the riverbanks each autumn and record the birds they see.
Herons are common along the quieter stretches, and otters have returned after decades of absence.
The library keeps letters written by the engineer who designed the locks in the early nineteenth century.
In one of them he complains that the stone arrived late and that the workers had not been paid on time.
Bread in this region is usually baked with rye, which grows better than wheat in the cold damp soil.
Most families still make a thick soup of beans and smoked pork when the first frost arrives.
The recipe changes from village to village, and every cook insists that their version is the original.
Cheese is sold at the Saturday market, where farmers bring wheels that have aged for over a year.
Apples from the orchards on the southern slope are pressed into a cloudy cider that is drunk young.
A small festival in October celebrates the harvest with music, dancing and long tables in the street.
Learning a second language takes patience, but short daily practice is better than occasional long sessions.
Reading simple stories aloud helps learners notice the rhythm of sentences and the sound of new words.
Many teachers recommend keeping a notebook of useful phrases rather than long lists of single words.
Mistakes are a normal part of the process, and a friendly conversation partner makes them less frightening.
Films with subtitles can be useful once the basic grammar is familiar and the vocabulary has grown.
After a few months most learners can follow slow speech and describe their own daily routine with ease.
The observatory on the hill opens its telescope to the public on clear evenings in late summer.
Guides point out the brightest planets first and then move on to clusters of faint and distant stars.
On a good night the band of the galaxy stretches from one horizon to the other above the dark valley.
Light pollution from the growing city has made such nights rarer than they were a generation ago.
Volunteers measure the brightness of the sky every month and send their results to a national survey.
Their records show that switching off unnecessary street lights has already made a visible difference.
""".strip().splitlines()

STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}


def _sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s.strip() + "." for s in flat.split(". ") if len(s.split()) > 6]


def sample_documents() -> list[dict]:
    prose = python_prose()
    texts = [t[:3000] for t in prose[:30]]
    sentences = [s for t in prose[30:60] for s in _sentences(t)]
    words = [w for s in sentences for w in s.split()]
    long = [w for w in dict.fromkeys(w.strip(".,;:()\"'") for w in words) if w.isalpha() and len(w) >= 14][
        :40
    ]
    built = {
        "empty": "",
        "blank-lines": "\n\n \n",
        "short": "Too short to keep.",
        "dup-paragraphs": "\n\n".join([sentences[0]] * 4 + sentences[1:3]),
        "dup-paragraph-chars": "\n\n".join([" ".join(sentences[3:9])] * 2 + sentences[9:16]),
        "dup-lines": "\n".join([sentences[16]] * 4 + sentences[17:20]),
        "dup-line-chars": "\n".join([" ".join(sentences[20:25])] * 2 + sentences[25:33]),
        "top-bigram": "\n".join(f"{s} New York, New York." for s in sentences[33:40]),
        "repeated-passage": "\n".join(
            [" ".join(sentences[40:44]), *sentences[44:50], " ".join(sentences[40:44]), *sentences[50:54]]
        ),
        "tiny-words": " ".join(["a", "an", "it", "is", "on", "by", "we", "go", "up", "to", "so"] * 8) + ".",
        "huge-words": " ".join(w for w in words if len(w) > 11)[:1500] + ".",
        "hashes": " ".join(f"#{w}" if i % 5 == 0 else w for i, w in enumerate(words[:300])),
        "ellipses": " ".join(f"{w}..." if i % 6 == 0 else w for i, w in enumerate(words[300:600])),
        "bullets": "\n".join(f"- {s}" for s in sentences[54:70]),
        "end-ellipses": "\n".join(s[:-1] + "..." if i % 2 else s for i, s in enumerate(sentences[70:82])),
        "numbers": " ".join(str(1000 + 7 * i) if i % 3 else w for i, w in enumerate(words[600:800])) + ".",
        "no-stop-words": " ".join(w for w in words[800:1400] if w.lower().strip(".,;:") not in STOP_WORDS),
        "lorem": "\n".join([*sentences[82:88], "Lorem ipsum dolor sit amet, consectetur adipiscing elit."]),
        "braces": "\n".join([*sentences[88:92], "The literal {1, 2, 3} builds a set of three numbers."]),
        "few-sentences": "\n".join(sentences[92:95]),
        "no-punctuation": "\n".join(s.rstrip(".") for s in sentences[95:110]),
        "short-lines": "\n".join(f"{w.strip('.,;:')} is fine." for w in words[1400:1460]),
        "list-lines": "\n".join(
            f"{a} {b}" + ("." if i % 4 == 0 else "")
            for i, (a, b) in enumerate(zip(long[0::2], long[1::2], strict=False))
        ),
        "citations": "\n".join(f"{s[:-1]} [{i}]." for i, s in enumerate(sentences[150:160])),
        "emoticons": "\n".join(
            f"{s} Note: (see above) :-) wow : -) it's 5 a.m ." for s in sentences[160:168]
        ),
        "whitespace": "\n".join(f"{s}  \t{s[::-1]}\u00a0 end.  " for s in sentences[168:176]),
        "IS_ALPHA": "The string IS_ALPHA appears here. " + " ".join(sentences[176:186]),
    }
    for i in range(5):  # plain paragraphs that pass every filter (C4 still rewrites their lines)
        chosen = PLAIN_SENTENCES[5 * i : 5 * i + 12]
        built[f"clean-{i}"] = "\n".join(
            " ".join(chosen[j : j + 2]) + " [1]" * (i % 2) for j in range(0, 12, 2)
        )
    docs = [{"id": f"prose-{i:02d}", "text": t} for i, t in enumerate(texts)]
    docs += [{"id": name, "text": text} for name, text in built.items()]
    return docs


# every reason each datatrove filter can give, and parameter sets under which the sample shows each of them
REASONS = {
    "gopher_repetition": {
        "empty", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
        "top_2_gram", "top_3_gram", "top_4_gram",
        *(f"duplicated_{n}_n_grams" for n in range(5, 11)),
    },
    "gopher_quality": {
        "gopher_short_doc", "gopher_long_doc", "gopher_below_avg_threshold", "gopher_above_avg_threshold",
        "gopher_too_many_hashes", "gopher_too_many_ellipsis", "gopher_too_many_bullets",
        "gopher_too_many_end_ellipsis", "gopher_below_alpha_threshold", "gopher_enough_stop_words",
    },
    "c4": {"lorem_ipsum", "curly_bracket", "too_few_sentences"},
    "fineweb_quality": {"empty", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"},
}  # fmt: skip

PARAMETER_SETS = [
    ("gopher_repetition", {}),
    *(("gopher_repetition", {"top_n_grams": ((n, 0.02),), "dup_n_grams": ()}) for n in (2, 3, 4)),
    *(("gopher_repetition", {"top_n_grams": (), "dup_n_grams": ((n, 0.05),)}) for n in range(5, 11)),
    ("gopher_quality", {}),
    ("gopher_quality", {"max_doc_words": 100}),
    ("c4", {}),
    ("c4", {"filter_no_terminal_punct": False}),
    ("fineweb_quality", {}),
]
