"""Scanning on send: what the platform can check, and says it checked, in each mode.

Plain mode (the platform holds the text and the media id) runs three kinds
of check, strictest verdict wins:

* **lists**: keywords (whole words, matched on folded text: see
  :func:`fold`) and regular expressions, each list with a label and a
  verdict, read from a JSON file (``DM_SCAN_LISTS``; format below);
* **media hashes**: the shared media's fingerprint (recorded by the CDN at
  registration) matched against the hash banks, so a file banked after it
  was registered is held even before the takedown sweep reaches it;
* **an external classifier** (``DM_CLASSIFIER_URL``): POSTed the text and
  media id, it answers ``{"verdict": "allow"|"flag"|"hold", "label": ...}``
  within ``DM_CLASSIFIER_TIMEOUT_S``; a timeout or error yields the
  configured fallback verdict, so a slow classifier cannot stall sends.

Verdicts: ``allow``; ``flag`` (delivered, and an alert is queued for
review); ``hold`` (stored, delivered to nobody until a moderator releases
it).  Sealed mode: the scanner sees only metadata (sender, conversation,
envelope count and size), says so (``saw="metadata"``), and allows.

List file::

    {"lists": [{"label": "scam", "verdict": "flag",
                "keywords": ["gift card", "wire the money"],
                "patterns": ["\\\\bbtc:[13][a-km-zA-HJ-NP-Z1-9]{25,34}\\\\b"]}]}
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import decancer_py

from cdn_auth.matching import BankSet, MediaHashIndex
from cdn_auth.media import Media
from service_kernel.cache import ExpiringCache
from service_kernel.clock import Clock
from service_kernel.files import read_json_list

from .errors import ScanListError
from .settings import DmSettings

log = logging.getLogger(__name__)

VERDICTS = ("allow", "flag", "hold")
MAX_LIST_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # allow | flag | hold
    labels: tuple[str, ...] = ()
    saw: str = "content"  # content | metadata

    @property
    def held(self) -> bool:
        return self.action == "hold"

    @property
    def alerts(self) -> bool:
        return self.action != "allow"


ALLOW = Verdict("allow")


def strictest(verdicts: Sequence[Verdict]) -> Verdict:
    worst = max((VERDICTS.index(v.action) for v in verdicts), default=0)
    labels = tuple(sorted({lb for v in verdicts if v.action != "allow" for lb in v.labels}))
    return Verdict(VERDICTS[worst], labels)


_TOKEN_RE = re.compile(r"[\w'$]+")
#: Dropped by :func:`fold`: format characters (soft hyphen, zero-width joiner and
#: non-joiner, bidi controls, BOM: invisible when rendered) and non-spacing marks
#: (accents, once decomposed; also variation selectors and combining overlays).
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
#: Letters that render blank (Hangul fillers) and the blank Braille pattern: dropped too, or
#: "sec\u3164ret" would be one token that looks like "secret".
_DROPPED_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def fold(text: str) -> str:
    """The form keywords and messages are compared in, so what renders alike matches alike.

    Look-alikes of Latin letters become those letters, and NFKC turns fullwidth,
    mathematical and other compatibility forms into their plain letters
    (:func:`_latin_lookalike`, before and after NFKC:
    Cyrillic ``"\\u043e"``, Greek ``"\\u039f"``, Lisu ``"\\ua4f3"`` and Devanagari digit zero
    ``"\\u0966"`` read as "o"), before case folding, which would turn a Greek capital Eta
    (an "H") into a small eta (an "n"); then case folding, and compatibility decomposition
    with format characters and non-spacing and enclosing marks dropped:
    ``"\\uff53\\uff45\\uff43\\u00adre\\u0301t"`` (fullwidth "sec", a soft hyphen, "re", an
    acute accent, "t") folds to ``"secret"``, ``"\\u043eur little secret"`` to ``"our little
    secret"``.  Lists and messages are folded the same way, so marks that distinguish words
    in some scripts are dropped, and Cyrillic or Greek words are spelled in Latin
    look-alikes, on both sides: a keyword in those scripts still matches its own words,
    and a hold list errs towards matching (a Russian word that looks like an English keyword
    matches it).  ASCII text, the common case, is only lower-cased (the other steps cannot
    change it).
    """
    if text.isascii():
        return text.lower()
    # Look-alikes are mapped before NFKC too, which would turn some into other letters first
    # (the lunate sigma "\u03f9", a "C", into a sigma; a parenthesized "o" into "(o)"), and
    # after it, for the letters NFKC makes (a mathematical bold capital Eta, an "H").
    composed = unicodedata.normalize("NFKC", "".join(map(_latin_lookalike, text)))
    if not composed.isascii():
        composed = "".join(map(_latin_lookalike, composed))
    return _plain(composed)


def _plain(composed: str) -> str:
    """The rest of :func:`fold` for NFKC text: case folding, compatibility decomposition,
    and format characters, non-spacing and enclosing marks and blank letters dropped."""
    decomposed = unicodedata.normalize("NFKD", composed.casefold())
    return "".join(
        c
        for c in decomposed
        if unicodedata.category(c) not in _DROPPED_CATEGORIES and c not in _DROPPED_CHARS
    )


#: Scripts whose letters serve as look-alikes of Latin ones, by the Unicode character name's
#: first words.  Only these are mapped: decancer also maps the letters of scripts with no
#: resemblance to Latin (Hangul "\u3145" -> "^", Hebrew "\u05e7\u05d8\u05e8\u05ea" ->
#: "porn", katakana "\u30a8\u30ed" -> "io"), which would hold innocent messages in those
#: scripts and break keywords written in them.
_LOOKALIKE_SCRIPTS = (
    "LATIN ",
    "CYRILLIC ",
    "GREEK ",
    "COPTIC ",
    "ARMENIAN ",
    "CHEROKEE ",
    "LISU ",
    "CANADIAN SYLLABICS ",
    "TIFINAGH ",
    "NKO ",
    "OLD ITALIC ",
    "CARIAN ",
    "LYCIAN ",
)


@functools.lru_cache(maxsize=4096)
def _latin_lookalike(c: str) -> str:
    """``c`` as the Latin letters it looks like (decancer's confusables tables), if it is a
    letter of a script in :data:`_LOOKALIKE_SCRIPTS`, a decimal digit of another script
    (Devanagari ``"\\u0966"`` is an "o"), or a symbol drawn as a Latin letter (negative
    squared or circled letters, regional indicator letters, the estimated symbol
    ``"\\u212e"``); else ``c``.  Emoji and other symbols are left alone: decancer would turn
    them into letters (``"\\U0001f600"`` -> "o"), making words out of what is not text."""
    if c.isascii():
        return c
    name, category = unicodedata.name(c, ""), unicodedata.category(c)
    if category[0] == "L":
        # A letter the rest of fold() makes plain ASCII is left to it ("\u00df" -> "ss",
        # "\u00e9" -> "e"): decancer reads some by shape instead ("\u00df" -> "b").
        plain = _plain(unicodedata.normalize("NFKC", c))  # what fold() makes of it unmapped
        mapped = name.startswith(_LOOKALIKE_SCRIPTS) and not plain.isascii()
    elif category == "Nd":
        mapped = True
    elif category[0] == "S":
        mapped = " LATIN " in f" {name} " or name.startswith("REGIONAL INDICATOR SYMBOL LETTER")
        mapped = mapped or name == "ESTIMATED SYMBOL"
    else:
        mapped = False
    return (str(decancer_py.parse(c)) or c) if mapped else c


def _tokens(folded: str) -> list[str]:
    """Words of folded text (apostrophes and $ kept): keywords and messages split the same way."""
    return _TOKEN_RE.findall(folded)


@dataclass(frozen=True, slots=True)
class _List:
    label: str
    verdict: str
    regex: re.Pattern[str] | None  # the list's patterns, one alternation


class ScanLists:
    """Keyword and pattern lists.

    Keywords are matched as whole-word phrases by n-gram lookup in one dict
    (a few dict probes per word of the message, whatever the list sizes), not
    as a regex alternation, which Python's engine tries branch by branch at
    every position (milliseconds per message for a few hundred phrases).
    Both keywords (at load) and each message are :func:`fold`-ed first, so soft
    hyphens, zero-width joiners, fullwidth letters or accents do not evade a phrase.
    Patterns are regular expressions, one alternation per list, searched in the raw
    text and, when it is not ASCII, in the folded text as well.
    """

    def __init__(
        self, lists: Sequence[_List] = (), phrases: dict[str, tuple[str, str]] | None = None
    ) -> None:
        self._lists = [lst for lst in lists if lst.regex is not None]
        self._phrases = phrases or {}  # "word word" -> (label, verdict)
        self._sizes = sorted({p.count(" ") + 1 for p in self._phrases})
        self._count = len(lists)

    def __len__(self) -> int:
        return self._count

    @classmethod
    def load(cls, path: Path) -> ScanLists:
        try:
            entries = read_json_list(path, "lists")
        except ValueError as exc:
            raise ScanListError(str(exc)) from None
        return cls.from_doc(entries)

    @classmethod
    def from_doc(cls, entries: list[Any]) -> ScanLists:
        out: list[_List] = []
        phrases: dict[str, tuple[str, str]] = {}
        for e in entries:
            if not isinstance(e, dict):
                raise ScanListError("each list is {label, verdict, keywords, patterns}")
            label, verdict = str(e.get("label", "")), str(e.get("verdict", ""))
            keywords, patterns = e.get("keywords", []), e.get("patterns", [])
            if not label or verdict not in ("flag", "hold"):
                raise ScanListError(f"list {label!r}: needs a label and verdict flag|hold")
            if (
                not all(isinstance(x, str) and x for x in (*keywords, *patterns))
                or len(keywords) + len(patterns) > MAX_LIST_ENTRIES
            ):
                raise ScanListError(f"list {label!r}: keywords/patterns are non-empty strings")
            for w in keywords:
                words = _tokens(fold(w))
                if not words:
                    raise ScanListError(f"list {label!r}: keyword {w[:40]!r} has no words")
                phrase = " ".join(words)
                seen = phrases.get(phrase)
                if seen is None or VERDICTS.index(verdict) > VERDICTS.index(seen[1]):
                    phrases[phrase] = (label, verdict)
            try:
                regex = (
                    re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
                    if patterns
                    else None
                )
            except re.error as exc:
                raise ScanListError(f"list {label!r}: {exc}") from None
            out.append(_List(label, verdict, regex))
        return cls(out, phrases)

    def scan(self, text: str) -> Verdict:
        ascii_only = text.isascii()
        folded = fold(text)
        # ASCII text folds to its lower case, which IGNORECASE patterns already cover.
        hits = [
            Verdict(lst.verdict, (lst.label,))
            for lst in self._lists
            if lst.regex is not None
            and (lst.regex.search(text) or (not ascii_only and lst.regex.search(folded)))
        ]
        if self._phrases:
            words = _tokens(folded)
            for n in self._sizes:
                for i in range(len(words) - n + 1):
                    found = self._phrases.get(" ".join(words[i : i + n]))
                    if found is not None:
                        hits.append(Verdict(found[1], (found[0],)))
        return strictest(hits) if hits else ALLOW


class Classifier(Protocol):
    async def classify(self, sender: str, text: str, media_id: str | None) -> Verdict: ...


class HttpClassifier:
    """An external classifier over HTTP, bounded by a timeout with a fallback verdict."""

    def __init__(self, url: str, *, timeout_s: float, on_error: str) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.on_error = Verdict(on_error, ("classifier_unavailable",))
        self._http: aiohttp.ClientSession | None = None

    async def classify(self, sender: str, text: str, media_id: str | None) -> Verdict:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._http.post(
                    self.url, json={"sender": sender, "text": text, "media_id": media_id}
                ) as r:
                    doc = await r.json(content_type=None) if r.status == 200 else {}
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            log.warning(
                "classifier %s: %s; verdict %s", self.url, type(exc).__name__, self.on_error.action
            )
            return self.on_error
        verdict, label = doc.get("verdict"), doc.get("label", "classifier")
        if verdict not in VERDICTS or not isinstance(label, str):
            return self.on_error
        return Verdict(verdict, (label[:64],) if verdict != "allow" else ())

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class MediaHashCheck:
    """The CDN's fingerprint of a shared item against the banks (cached per media id)."""

    def __init__(self, banks: BankSet, index: MediaHashIndex, clock: Clock, ttl_s: float = 30.0) -> None:
        self._banks, self._index = banks, index
        self._cache: ExpiringCache[Verdict] = ExpiringCache("media_verdict", 100_000, clock)
        self._clock, self._ttl_s = clock, ttl_s

    async def verdict(self, media: Media) -> Verdict:
        hit = self._cache.get(media.id)
        if hit is not None:
            return hit
        fp = await self._index.fingerprint(media.id)
        match = await self._banks.match(fp) if fp is not None else None
        v = ALLOW if match is None else Verdict("hold", (f"bank:{match.bank}",))
        self._cache.put(media.id, v, self._clock() + self._ttl_s)
        return v


class Scanner:
    def __init__(
        self,
        lists: ScanLists,
        *,
        media: MediaHashCheck | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        self.lists = lists
        self.media = media
        self.classifier = classifier

    async def scan_plain(self, sender: str, text: str, media: Media | None) -> Verdict:
        verdicts = [self.lists.scan(text)] if text else []
        if media is not None and self.media is not None:
            verdicts.append(await self.media.verdict(media))
        if self.classifier is not None:
            verdicts.append(await self.classifier.classify(sender, text, media.id if media else None))
        return strictest(verdicts)

    @staticmethod
    def scan_sealed() -> Verdict:
        """Sealed: content is ciphertext the platform has no key for; nothing to match."""
        return Verdict("allow", (), saw="metadata")

    async def close(self) -> None:
        if isinstance(self.classifier, HttpClassifier):
            await self.classifier.close()


def build_scanner(settings: DmSettings, banks: BankSet, index: MediaHashIndex, clock: Clock) -> Scanner:
    lists = ScanLists.load(settings.scan_lists) if settings.scan_lists else ScanLists()
    classifier = (
        HttpClassifier(
            settings.classifier_url,
            timeout_s=settings.classifier_timeout_s,
            on_error=settings.classifier_on_timeout,
        )
        if settings.classifier_url
        else None
    )
    media = MediaHashCheck(banks, index, clock) if settings.scan_media_hashes else None
    return Scanner(lists, media=media, classifier=classifier)
