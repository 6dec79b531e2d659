"""Typed application state shared by cdn_auth's handlers (one AppKey, no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from service_kernel.clock import Clock
from service_kernel.redis_client import RedisClient

from .authorizer import Authorizer
from .grant_store import GrantStore
from .keyring import KeyRingSource
from .matching import BankSet, MediaHashIndex
from .metrics import Metrics
from .origin import Origin
from .playback import PlaybackTokens
from .registry import MediaRegistry
from .revocation import RevocationLog
from .settings import EdgeSettings
from .suspension import SuspendedUsers


@dataclass
class EdgeState:
    settings: EdgeSettings
    redis: RedisClient
    authorizer: Authorizer
    registry: MediaRegistry
    revocations: RevocationLog
    origin: Origin
    metrics: Metrics
    clock: Clock
    #: Hash banks and the registered-media hash index (known-bad media, both modes).
    banks: BankSet
    hash_index: MediaHashIndex
    #: Who minted each grant (encrypted-pointer mode).
    grants: GrantStore
    #: Users a moderator suspended (written by dm): they register no media.
    suspended: SuspendedUsers
    #: The key ring's minting side; None on edges that only verify (they cannot mint grants).
    minter: KeyRingSource | None = None
    #: Browser media cookies; None when browser playback is off (no secret configured).
    playback: PlaybackTokens | None = None


STATE: web.AppKey[EdgeState] = web.AppKey("cdn_auth_state", EdgeState)
