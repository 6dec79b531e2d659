"""Keyword lists match what renders alike: invisible characters, compatibility forms
(fullwidth, ligatures, circled letters), case and accents do not evade a phrase."""

from __future__ import annotations

import pytest

from dm.scanner import ScanLists, fold

LISTS = ScanLists.from_doc(
    [
        {"label": "grooming", "verdict": "hold", "keywords": ["our little secret"]},
        {"label": "scam", "verdict": "flag", "keywords": ["Gift Card"], "patterns": [r"\bwire\b"]},
    ]
)


def _fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


@pytest.mark.parametrize(
    "text",
    [
        "this is our little sec\u00adret",  # soft hyphen
        "this is our li\u200dttle secret",  # zero-width joiner
        "this is our\u200b little\u2060 secret",  # zero-width space (Cf), word joiner
        "this is \ufeffour little secret",  # BOM
        "this is our l\u200ci\u200ettle secret",  # zero-width non-joiner, LRM
        "this is " + _fullwidth("our little secret"),  # fullwidth letters
        "this is OUR LITTLE SECRET",
        "this is our li\u0308ttle se\u0301cret",  # combining marks on plain letters
        "this is our lïttle sécret",  # precomposed accented letters
        "this is our \u24db\u24d8\u24e3\u24e3\u24db\u24d4 secret",  # circled letters
        "this is our little sec\u3164ret",  # Hangul filler: a letter that renders blank
        "this is our little sec\uffa0ret",  # halfwidth Hangul filler
        "this is our lit\u115ftle se\u1160cret",  # Hangul choseong and jungseong fillers
        "this is our little sec\u2800ret",  # blank Braille pattern
        "this is \u043eur l\u0456ttl\u0435 s\u0435cr\u0435t",  # Cyrillic o, i, e
        "this is \u03bf\u03c5r l\u03b9ttle secret",  # Greek omicron, upsilon, iota
        "this is our little \uabaa\u0435\u0441ret",  # Cherokee S, Cyrillic e and es
        "this is our little \U0001d530\U0001d522\U0001d520\U0001d52f\U0001d522\U0001d531",  # Fraktur
        "this is OUR LITTLE \u0405\u0415\u0421RET",  # Cyrillic capitals DZE, IE, ES
    ],
)
def test_evasions_of_a_hold_phrase_are_held(text: str) -> None:
    v = LISTS.scan(text)
    assert (v.action, v.labels) == ("hold", ("grooming",))


def test_keywords_are_folded_at_load_too() -> None:
    lists = ScanLists.from_doc(
        [
            {
                "label": "x",
                "verdict": "hold",
                "keywords": [_fullwidth("SEC") + "\u00ad" + _fullwidth("RET")],
            }
        ]
    )
    assert lists.scan("a secret").held


def test_patterns_also_see_folded_text() -> None:
    assert LISTS.scan("please " + _fullwidth("wire") + " it").action == "flag"
    assert LISTS.scan("please wi\u00adre it").action == "flag"


def test_folding_keeps_words_apart_and_innocent_text_allowed() -> None:
    assert LISTS.scan("our little secretary").action == "allow"  # still whole words
    assert LISTS.scan("our little\nsecret").held  # any whitespace separates words
    assert LISTS.scan("ours is a little secret").action == "allow"


def test_fold() -> None:
    assert fold("Straße") == "strasse"
    assert fold(_fullwidth("SEC") + "\u00adre\u0301t") == "secret"
    assert fold("look at this") == "look at this"


def test_other_scripts_match_their_own_keywords_and_non_letters_stay_apart() -> None:
    """Look-alike folding applies to lists and messages alike: a Cyrillic keyword still
    matches its own words.  Only letters and digits are mapped: emoji, symbols and CJK
    ideographs are never turned into letters or digits that could make up a keyword."""
    lists = ScanLists.from_doc(
        [
            {
                "label": "ru",
                "verdict": "hold",
                "keywords": ["\u043d\u0430\u0448 \u0441\u0435\u043a\u0440\u0435\u0442"],
            },
            {"label": "go", "verdict": "flag", "keywords": ["go now"]},
        ]
    )
    assert lists.scan("\u044d\u0442\u043e \u041d\u0410\u0428 \u0441\u0435\u043a\u0440\u0435\u0442").held
    assert (
        lists.scan(
            "\u043f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430?"
        ).action
        == "allow"
    )
    for text in ("g\U0001f600 now", "g\u2764 now", "g\u2661 now", "g\u65e5 now"):
        assert lists.scan(text).action == "allow", text
    assert fold("\U0001f600 \u2764 \u6771\u4eac") == "\U0001f600 \u2764 \u6771\u4eac"
    assert fold("\u043eur l\u0456ttl\u0435") == "our little"
    assert fold("\ua4f3ur \u0966ur") == "our our"  # Lisu letter O, Devanagari digit zero
