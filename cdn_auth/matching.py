"""Known-bad media matched at registration, and taken down everywhere when banked later.

:class:`BankSet` is every bank this process knows: those loaded from files
at start, plus entries moderators added at run time, which live in Redis
(one append-only list per bank) and are pulled in before each match, so
every edge and dm process matches on the same lists.

:class:`MediaHashIndex` remembers each registered item's hashes (exact
digests in sets keyed by digest; PDQ hashes in one hash scanned in chunks),
so a hash added to a bank finds every item already registered that matches
it; :func:`bank_and_take_down` then takes each down through the revocation
stream every edge tails.

No registration slips between the two.  An upload indexes its hashes, *then*
matches them against the banks (reading the run-time additions from Redis);
an addition appends to its bank in Redis, *then* searches the index.  Whichever
write comes first, the other side's later read sees it: the upload is refused
or held by its own match, or found by the sweep.  An item the sweep finds
before its record exists gets a pending takedown that its registration
applies (:meth:`cdn_auth.registry.MediaRegistry.take_down`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from service_kernel.errors import InvalidField
from service_kernel.redis_client import RedisClient

from . import redis_keys, revocation
from .errors import BankFormatError
from .fingerprint import Fingerprint
from .hashbank import ACTIONS, Bank, load_manifest, normalize
from .pdq_hex import DEFAULT_THRESHOLD, parse_hex
from .registry import MediaRegistry
from .revocation import RevocationLog
from .settings import EdgeSettings

log = logging.getLogger(__name__)

#: Registered PDQ hashes read per HSCAN step when a new bank entry is swept against them.
SWEEP_CHUNK = 1000
MAX_SIGNALS_PER_ADD = 10_000


@dataclass(frozen=True, slots=True)
class BankMatch:
    bank: str
    action: str
    hits: tuple[tuple[str, str, int], ...]  # (kind, signal, distance)


class BankSet:
    def __init__(
        self,
        redis: RedisClient,
        banks: Sequence[Bank],
        *,
        moderation_bank: str = "moderation",
        moderation_action: str = "refuse",
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        self._redis = redis
        self.banks = {b.name: b for b in banks}
        if moderation_bank not in self.banks:
            self.banks[moderation_bank] = Bank(moderation_bank, moderation_action, threshold)
        self.moderation_bank = moderation_bank
        self.threshold = threshold
        self._seen = dict.fromkeys(self.banks, 0)
        #: One sync at a time: two reading from the same offset would both add what they
        #: read, the offset would overshoot the list, and the next signals banked would
        #: never be loaded by this process (every upload and media send syncs).
        self._sync_lock = asyncio.Lock()

    async def sync(self) -> None:
        """Pull the run-time additions this process has not seen yet (one pipeline)."""
        async with self._sync_lock:
            await self._sync()

    async def _sync(self) -> None:
        names = list(self.banks)
        async with self._redis.pipeline(transaction=False) as p:
            for name in names:
                p.lrange(redis_keys.bank_signals(name), self._seen[name], -1)
            tails = await p.execute()
        for name, tail in zip(names, tails, strict=True):
            if not tail:
                continue
            signals = []
            for raw in tail:
                kind, _, value = (raw.decode() if isinstance(raw, bytes) else raw).partition(",")
                signals.append((kind, value))
            self.banks[name].add(signals)
            self._seen[name] += len(tail)

    async def match(self, fp: Fingerprint) -> BankMatch | None:
        """The strictest bank that matches (refuse before hold), or None."""
        await self.sync()
        found: list[BankMatch] = []
        for bank in self.banks.values():
            hits = bank.matches(fp.signals())
            if hits:
                found.append(BankMatch(bank.name, bank.action, tuple(hits)))
        found.sort(key=lambda m: ACTIONS.index(m.action))
        return found[0] if found else None

    async def add(self, bank: str, signals: Sequence[tuple[str, str]]) -> None:
        if bank not in self.banks:
            raise InvalidField(f"no bank named {bank[:64]!r}")
        if signals:
            await self._redis.rpush(
                redis_keys.bank_signals(bank), *(f"{kind},{value}" for kind, value in signals)
            )
        await self.sync()

    def summary(self) -> list[dict[str, Any]]:
        return [
            {
                "name": b.name,
                "action": b.action,
                "md5": len(b.md5),
                "sha256": len(b.sha256),
                "pdq": len(b.pdq),
            }
            for b in self.banks.values()
        ]


def banks_from(settings: EdgeSettings, redis: RedisClient) -> BankSet:
    """The banks a deployment's settings name (files read once, at start)."""
    files = (
        load_manifest(settings.bank_manifest, threshold=settings.pdq_threshold)
        if settings.bank_manifest is not None
        else []
    )
    return BankSet(
        redis, files, moderation_action=settings.moderation_bank_action, threshold=settings.pdq_threshold
    )


def parse_request_signals(raw: Any) -> list[tuple[str, str]]:
    """``[{"signal_type": ..., "signal": ...}]`` from a request body, validated."""
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_SIGNALS_PER_ADD:
        raise InvalidField(f"signals must be a list of 1..{MAX_SIGNALS_PER_ADD} items")
    out = []
    for item in raw:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("signal_type"), str)
            or not isinstance(item.get("signal"), str)
        ):
            raise InvalidField("each signal is {signal_type, signal}")
        try:
            out.append(normalize(item["signal_type"], item["signal"]))
        except BankFormatError as exc:
            raise InvalidField(str(exc)) from None
    return out


class MediaHashIndex:
    def __init__(self, redis: RedisClient, threshold: int = DEFAULT_THRESHOLD) -> None:
        self._redis = redis
        self.threshold = threshold

    async def record(self, media_id: str, fp: Fingerprint) -> None:
        async with self._redis.pipeline(transaction=False) as p:
            p.hset(
                redis_keys.media_fingerprint(media_id),
                mapping={"md5": fp.md5, "sha256": fp.sha256, "pdq": ",".join(fp.pdq)},
            )
            p.sadd(redis_keys.exact_hash_index("md5", fp.md5), media_id)
            p.sadd(redis_keys.exact_hash_index("sha256", fp.sha256), media_id)
            if fp.pdq:
                p.hset(redis_keys.MEDIA_PDQ_INDEX, media_id, ",".join(fp.pdq))
            await p.execute()

    async def forget(self, media_id: str, fp: Fingerprint) -> None:
        """Drop an item's hashes (an upload refused after indexing them)."""
        async with self._redis.pipeline(transaction=False) as p:
            p.delete(redis_keys.media_fingerprint(media_id))
            p.srem(redis_keys.exact_hash_index("md5", fp.md5), media_id)
            p.srem(redis_keys.exact_hash_index("sha256", fp.sha256), media_id)
            p.hdel(redis_keys.MEDIA_PDQ_INDEX, media_id)
            await p.execute()

    async def fingerprint(self, media_id: str) -> Fingerprint | None:
        h = cast(dict[str, str], await self._redis.hgetall(redis_keys.media_fingerprint(media_id)))
        if not h:
            return None
        pdq = tuple(x for x in h.get("pdq", "").split(",") if x)
        return Fingerprint(h["md5"], h["sha256"], pdq)

    async def find(self, signals: Iterable[tuple[str, str]]) -> set[str]:
        """Registered media ids matching any of ``signals`` (exact, or PDQ within threshold)."""
        signals = list(signals)
        ids: set[str] = set()
        for kind, value in signals:
            if kind in ("md5", "sha256"):
                ids |= cast(
                    set[str], await self._redis.smembers(redis_keys.exact_hash_index(kind, value))
                )
        wanted = [parse_hex(v) for kind, v in signals if kind == "pdq"]
        if wanted:
            ids |= await self._scan_pdq(wanted)
        return ids

    async def _scan_pdq(self, queries: list[bytes]) -> set[str]:
        import numpy as np  # loaded on the first sweep, not at process start

        from .pdq_index import distances, to_words

        wanted = to_words(queries)
        found: set[str] = set()
        cursor = 0
        while True:
            cursor, reply = await self._redis.hscan(
                redis_keys.MEDIA_PDQ_INDEX, cursor, count=SWEEP_CHUNK
            )
            chunk = cast(dict[str, str], reply)  # with values (no novalues=): a decoded map
            owners, hashes = [], []
            for media_id, joined in chunk.items():
                for h in joined.split(","):
                    owners.append(media_id)
                    hashes.append(parse_hex(h))
            if hashes:
                words = to_words(hashes)
                for q in wanted:
                    close = np.nonzero(distances(words, q[None, :]) <= self.threshold)[0]
                    found.update(owners[i] for i in close)
            if cursor == 0:
                return found


async def bank_and_take_down(
    banks: BankSet,
    index: MediaHashIndex,
    registry: MediaRegistry,
    revocations: RevocationLog,
    bank: str,
    signals: Sequence[tuple[str, str]],
    *,
    by: str,
) -> list[str]:
    """Add ``signals`` to ``bank``, then take down every registered item that matches them,
    at every edge (each takedown is a revocation event the edges apply within a second).
    An item indexed but not yet registered (an upload in flight) is taken down as its
    record is written; its id is in the list returned like the others."""
    await banks.add(bank, signals)
    taken = sorted(await index.find(signals))
    for media_id in taken:
        done = await registry.take_down(media_id, reason=f"matched bank {bank}", by=by)
        await revocations.publish(revocation.takedown(media_id))
        log.info("bank %s: took down %s%s", bank, media_id, "" if done else " (at registration)")
    return taken
