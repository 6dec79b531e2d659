"""Red-team round 15 (unit): look-alike folding in the dm scanner (commits 7be859b, a51e16a).

``fold()`` now maps every non-ASCII letter or digit (but CJK ideographs) to the Latin
look-alike decancer gives for that single character, after NFKC, case folding and NFKD.
Findings, fixed (the look-alike map now runs before case folding and NFKC as well as
after, covers letter-shaped symbols, and only scripts whose letters pass for Latin;
enclosing marks are dropped), except the two kept as strict xfails, known limits:

* (a) evasions the change should catch: it maps after case folding and NFKC, so Greek
  capitals that pass for H, M, N, Y (and the lunate sigma, a perfect "c") fold to the
  letters their *lower case* looks like; it skips every symbol, so the "fancy text"
  letters (negative squared/circled, regional indicators, parenthesized via NFKC) pass;
  decancer reads most vertical-stroke look-alikes of "l" as "i" (the docs name only Lisu);
* (b) outside per-character mapping: a bidi override shows reversed text in reading order;
  an enclosing combining mark splits a word;
* (c) false positives and a load failure: letters of scripts with no Latin look-alikes
  (Hangul, kana, Hebrew) are spelled in arbitrary Latin letters, so a Korean keyword holds
  a Chuseok greeting, a Japanese keyword holds Italian "io", a Hebrew word is "porn", and
  the common Korean slang keyword "ㅅㅅ" folds to "^^", no words, so the list file (and the
  service, which loads it at start) is refused.
"""

from __future__ import annotations

import pytest

from dm.scanner import ScanLists, fold

HOLD = ScanLists.from_doc(
    [
        {
            "label": "grooming",
            "verdict": "hold",
            "keywords": ["our little secret", "how old are you", "send nudes", "meet me"],
        }
    ]
)


def _offset(s: str, upper_base: int) -> str:
    """Each ASCII letter of ``s`` as the symbol at ``upper_base + (letter - 'a')``."""
    return "".join(chr(upper_base + ord(c) - ord("a")) if "a" <= c <= "z" else c for c in s)


# (a) Case folding and NFKC run before the look-alike map -----------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "\u0397OW OLD ARE YOU",  # Greek capital Eta for H -> "now old are you"
        "SE\u039dD \u039dUDES",  # Greek capital Nu for N -> "sevd vudes"
        "\u039cEET \u039cE",  # Greek capital Mu for M -> "ueet ue"
        "\U0001d6ae\U0001d6b6W OLD ARE YOU",  # mathematical bold capital Eta, Omicron
        "our little se\u03f2ret",  # Greek lunate sigma (renders as c) -> "seoret"
        "OUR LITTLE SE\u03f9RET",  # capital lunate sigma (renders as C)
    ],
)
def test_capital_greek_lookalikes_are_held(text: str) -> None:
    assert HOLD.scan(text).held, fold(text)


# (a) Letter-shaped symbols are skipped ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        _offset("our little secret", 0x1F170),  # negative squared: 🅾🆄🆁 🅻🅸🆃🆃🅻🅴 ...
        _offset("our little secret", 0x1F150),  # negative circled: 🅞🅤🅡 ...
        "\u200b".join(_offset("our little secret", 0x1F1E6)),  # regional indicators, ZWSP apart
        _offset("our little secret", 0x249C),  # parenthesized ⒪⒰⒭: NFKC makes "(o)(u)(r)"
        "our littl\u212e s\u212ecr\u212et",  # ESTIMATED SYMBOL (U+212E) for e
    ],
)
def test_letter_shaped_symbols_are_held(text: str) -> None:
    assert HOLD.scan(text).held, fold(text)


# (a) Vertical strokes that pass for "l" fold to "i" ------------------------------------


#: A bare vertical stroke passes for l as well as for I; decancer reads these as i (the
#: Arabic alef is not mapped at all), so in place of an l they evade.  Matching i and l as
#: one letter on both sides would close it, and was not done: a known limit.
_STROKE_AS_I = pytest.mark.xfail(strict=True, reason="known limit (b): a vertical stroke reads as i")


@pytest.mark.parametrize(
    "lookalike",
    [
        "\ua748",  # LATIN CAPITAL LETTER L WITH HIGH STROKE (was cased first, to an i)
        "\u0196",  # LATIN CAPITAL LETTER IOTA (likewise)
        pytest.param("\u04cf", marks=_STROKE_AS_I),  # CYRILLIC SMALL LETTER PALOCHKA
        pytest.param("\u04c0", marks=_STROKE_AS_I),  # CYRILLIC LETTER PALOCHKA
        pytest.param("\u01c0", marks=_STROKE_AS_I),  # LATIN LETTER DENTAL CLICK
        pytest.param("\u0627", marks=_STROKE_AS_I),  # ARABIC LETTER ALEF
        pytest.param("\u0661", marks=_STROKE_AS_I),  # ARABIC-INDIC DIGIT ONE
        pytest.param("\u05df", marks=_STROKE_AS_I),  # HEBREW LETTER FINAL NUN (folds to j)
    ],
)
def test_vertical_stroke_lookalikes_of_l_are_held(lookalike: str) -> None:
    text = "our little secret".replace("l", lookalike)
    assert HOLD.scan(text).held, fold(text)


# (b) Beyond a per-character map ----------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="(b) a right-to-left override shows the reversed text in reading order; "
    "fold drops the control and scans the logical (reversed) order",
)
def test_bidi_override_of_reversed_phrase_is_held() -> None:
    text = "\u202e" + "our little secret"[::-1] + "\u202c"  # renders as "our little secret"
    assert HOLD.scan(text).held, fold(text)


def test_enclosing_mark_inside_a_word_is_held() -> None:
    text = "our little sec\u20ddret"  # c in a circle
    assert HOLD.scan(text).held, fold(text)


# (c) False positives and a list that no longer loads -------------------------------------


def test_korean_keyword_does_not_hold_a_chuseok_greeting() -> None:
    lists = ScanLists.from_doc(
        [{"label": "ko", "verdict": "hold", "keywords": ["\uc139\uc2a4"]}]  # 섹스
    )
    chuseok = "\ucd94\uc11d \uc798 \ubcf4\ub0b4\uc138\uc694"  # 추석 잘 보내세요 (happy Chuseok)
    assert lists.scan(chuseok).action == "allow"
    assert lists.scan("\uc11d\uc0ac \uacfc\uc815").action == "allow"  # 석사 과정 (master's course)


def test_japanese_keywords_do_not_hold_latin_words() -> None:
    lists = ScanLists.from_doc(
        [{"label": "ja", "verdict": "hold", "keywords": ["\u30a8\u30ed", "\u30ed\u30ea"]}]
    )
    assert lists.scan("io ti amo").action == "allow"
    assert lists.scan("he might OD").action == "allow"


def test_hebrew_word_is_not_an_english_keyword() -> None:
    lists = ScanLists.from_doc([{"label": "adult", "verdict": "hold", "keywords": ["porn"]}])
    assert lists.scan("\u05e7\u05d8\u05e8\u05ea").action == "allow"  # קטרת


def test_korean_slang_keyword_still_loads_and_matches() -> None:
    lists = ScanLists.from_doc(
        [{"label": "ko", "verdict": "hold", "keywords": ["\u3145\u3145"]}]  # ㅅㅅ
    )
    assert lists.scan("\u3145\u3145 \ud560\ub798?").held  # ㅅㅅ 할래?
