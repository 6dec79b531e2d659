"""Redis connections: one place that knows single-server vs Cluster and the timeouts.

Clients from :func:`connect` decode replies (``decode_responses=True``), so every reply
value is ``str``; redis-py's types cannot see that option and say ``bytes | str``.  Where
a caller needs ``str`` it narrows with :func:`stream_entries`, or with a ``cast`` that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeAlias, cast
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Connection, Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.retry import Retry  # not redis.retry's: that one never awaits the call
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    TimeoutError,
)
from redis.typing import EncodableT, FieldT

from .auto_pipeline import AutoPipelinedRedis
from .redis_connection import LeanConnection

#: What every Redis-using class takes: a single server's client or a Cluster client, both
#: from :func:`connect` (decode_responses=True), so values come back as ``str``.
RedisClient: TypeAlias = Redis | RedisCluster
#: What a Redis call raises when the store fails.  redis-py's Cluster client raises
#: ``RedisClusterException`` (not a ``RedisError``) when no node answers its topology
#: refresh: caught as ``RedisError`` alone it escaped as a 500, and ended a stream tail
#: for good (a CI run's cluster test saw the edge go stale and stay stale).
RedisFailure: Final = (RedisError, RedisClusterException)
#: The errors the Cluster client retries a lone command after (a broken connection, a
#: timeout, a Cluster between topologies).  Its pipeline, executed with
#: ``raise_on_error=False``, returns them as replies instead, unretried:
#: :func:`script_reply` retries a script after them, as the lone command would have been.
#: (A single server's pipeline never returns them: auto-pipelining fails the caller's whole
#: pipeline instead, see :mod:`service_kernel.auto_pipeline`.)
RETRYABLE: Final = (ConnectionError, TimeoutError, ClusterDownError)
#: What :meth:`RedisClient.pipeline` returns.
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline
#: The field map HSET and XADD take, as redis-py spells it.
Fields: TypeAlias = dict[FieldT, EncodableT]
#: Stream entries (XRANGE, XREVRANGE) as a decoding client returns them: ``(id, fields)``.
StreamEntries: TypeAlias = list[tuple[str, dict[str, str]]]


def field_map(mapping: Mapping[str, str]) -> Fields:
    """``mapping`` typed as HSET's and XADD's field map.  Their signatures name
    ``dict[FieldT, EncodableT]``, which is invariant, so a ``dict[str, str]`` does not fit
    although it is exactly what they accept: a cast, no copy."""
    return cast(Fields, mapping)


def stream_entries(reply: object) -> StreamEntries:
    """An XRANGE or XREVRANGE reply from a :func:`connect` client: ids and fields are
    ``str`` (decoded).  redis-py types the reply ``... | None``; an absent stream is ``[]``."""
    return cast(StreamEntries, reply or [])


def queue_script(pipe: RedisPipeline, script: AsyncScript, keys: list[str], args: list[Any]) -> None:
    """Queue ``script`` on ``pipe`` as a bare EVALSHA.

    redis-py's own way (calling the script with ``client=pipe``) makes ``execute`` send
    ``SCRIPT EXISTS`` first: a round trip more for every pipeline that holds a script.  A
    server that lost its script cache (a restart, ``SCRIPT FLUSH``) answers NOSCRIPT
    instead: read the reply with :func:`script_reply`, which runs the script again the
    way that loads it.
    """
    # execute_command, not pipe.evalsha: redis-py blocks the method on Cluster pipelines, a
    # blanket rule; EVALSHA is routed by its keys like any command, and ours share a slot.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


async def script_reply(reply: Any, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
    """The reply of a script queued with :func:`queue_script` in a pipeline executed with
    ``raise_on_error=False``: the reply itself; the script run again alone after NOSCRIPT
    (which loads it) or after a :data:`RETRYABLE` error (with the client's own retries,
    which such a pipeline does not apply: redis-py's Cluster pipeline retries only errors it
    raises); else the error, raised.  A script whose connection broke may have run: run
    again, it runs twice, exactly as the client's retry of a lone command would."""
    if isinstance(reply, (NoScriptError, *RETRYABLE)):
        return await script(keys=keys, args=args)
    if isinstance(reply, Exception):
        raise reply
    return reply


try:
    from redis.maint_notifications import MaintNotificationsConfig

    _MAINT_OFF: Any = MaintNotificationsConfig(enabled=False)
except ImportError:  # older redis-py
    _MAINT_OFF = None


def connect(
    url: str, *, cluster: bool = False, socket_timeout_s: float | None = 2.0, auto_pipeline: bool = True
) -> RedisClient:
    """A client for ``url`` (with ``cluster``: one node's URL, or a comma-separated list of
    seed nodes).  It fails fast so callers can answer 503 promptly: one quick retry on a
    single server; on a Cluster three (redis-py's own default), 0.14 s of backoff in
    all, because there a retry is also how the client re-learns the topology after a
    connection error or a moved slot, as during a failover.

    ``socket_timeout_s=None`` is for the stream tailers, whose blocking XREAD guards
    itself with ``asyncio.timeout``.

    A single server's client auto-pipelines the short commands that concurrent requests
    issue together (:mod:`service_kernel.auto_pipeline`); ``auto_pipeline=False`` sends
    each alone.  A Cluster client always does: after one node's connection error, redis-py's
    Cluster pipeline runs again commands other nodes had already executed.
    """
    retry = (
        Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=3)
        if cluster
        # A single server retries a lone command once after a broken connection (a pooled
        # connection the server dropped), not after a timeout: a command that timed out may
        # have run, and a script run twice (a rate-limit charge, a push) is worse than a 503.
        else Retry(
            ExponentialBackoff(cap=0.05, base=0.01), retries=1, supported_errors=(ConnectionError,)
        )
    )
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 1.0,
        "socket_timeout": socket_timeout_s,
        "retry": retry,
    }
    if cluster:
        urls = [u.strip() for u in url.split(",") if u.strip()]
        if len(urls) > 1:  # a list of seed nodes: any reachable one discovers the rest
            nodes = [ClusterNode(p.hostname or "127.0.0.1", p.port or 6379) for p in map(urlsplit, urls)]
            first = urlsplit(urls[0])
            return RedisCluster(
                startup_nodes=nodes, password=first.password, username=first.username, **common
            )
        return RedisCluster.from_url(url, **common)
    # A request waits (up to 1 s) for a free connection instead of failing at once: redis-py's
    # default pool raises MaxConnectionsError beyond 100 in flight, which under load turned
    # into 503s although Redis itself was idle.
    pool = BlockingConnectionPool.from_url(
        url, max_connections=512, timeout=1.0, health_check_interval=10, **common
    )
    if pool.connection_class is Connection:  # TCP (a unix socket or TLS keeps redis-py's own)
        pool.connection_class = LeanConnection
    extra: dict[str, Any] = {}
    if _MAINT_OFF is not None:  # redis-py >= 7 asks servers for maintenance pushes; 6.2/7.0 lack it
        extra["maint_notifications_config"] = _MAINT_OFF
    client = (AutoPipelinedRedis if auto_pipeline else Redis)(connection_pool=pool, **extra)
    client.auto_close_connection_pool = True  # as Redis.from_pool does: aclose() closes the pool
    return client
