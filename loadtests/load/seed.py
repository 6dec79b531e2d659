"""Seeding a load test: users with device keys, conversations and private videos, over HTTP.

Every simulated share needs a sender and a recipient in their own
conversation (so the dm service's per-conversation send limit never caps
the load), and a *private* video owned by the sender: the edge skips the
pointer and grant checks for public media, so only private media measure
what the modes cost.  Seeding happens before the clock starts; the seed
file it writes lets any number of Locust processes pick disjoint pairs.

Plain ``http.client`` and threads: this runs in the runner (no event loop)
and, as a fallback, inside Locust users (gevent patches the sockets).
Targets must allow the dm dev issuer (``POST /v1/users``).
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dm import envelope
from dm.edge_client import encode_upload, media_metadata
from loadtests.load.scenarios import (
    CONVERSATION_MODE,
    SCANNED_MODES,
    SUITE_OF,
    is_view,
    mode_of,
)
from loadtests.stack.clip import VIDEO_BYTES, clip_bytes
from service_kernel.encoding import b64url_decode, b64url_encode

SESSION_TTL_S = 24 * 3600
SEED_VERSION = 1


class ApiError(Exception):
    def __init__(
        self, status: int, method: str, url: str, body: bytes, *, retry_after_s: float | None = None
    ) -> None:
        try:
            err = json.loads(body)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "http_error", body[:200].decode(errors="replace")
        super().__init__(f"{method} {urlsplit(url).path}: {status} {code}: {message}")
        self.status, self.code = status, code
        self.retry_after_s = retry_after_s


def call(
    method: str,
    url: str,
    *,
    token: str | None = None,
    json_body: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 15.0,
    rate_limited_retries: int = 5,
) -> Any:
    """One HTTP request; JSON answer (or ``None`` when empty); :class:`ApiError` on >= 400.

    A ``429`` is retried after the ``Retry-After`` it names (at most 5 s, a few times): a
    refused request was not carried out, so sending it again is safe.
    """
    for attempt in range(rate_limited_retries + 1):
        try:
            return _call_once(
                method,
                url,
                token=token,
                json_body=json_body,
                body=body,
                headers=headers,
                timeout_s=timeout_s,
            )
        except ApiError as err:
            if (
                err.status != 429
                or err.retry_after_s is None
                or err.retry_after_s > 5.0
                or attempt == rate_limited_retries
            ):
                raise
            time.sleep(err.retry_after_s)
    raise AssertionError("unreachable")


def _call_once(
    method: str,
    url: str,
    *,
    token: str | None,
    json_body: Any,
    body: bytes | None,
    headers: dict[str, str] | None,
    timeout_s: float,
) -> Any:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        h["Content-Type"] = "application/json"
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout_s)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target or "/", body=body, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    if resp.status >= 400:
        retry = resp.getheader("Retry-After")
        raise ApiError(
            resp.status,
            method,
            url,
            raw,
            retry_after_s=float(retry) if retry and retry.strip().isdigit() else None,
        )
    return json.loads(raw) if raw else None


def video_bytes(size: int = VIDEO_BYTES) -> bytes:
    """The load test's stand-in video (the one the load-test stack serves at its origin path)."""
    return clip_bytes(size)


NO_SCAN_DM = (
    "plain+scan needs a dm that scans plain sends (started with DM_SCAN_LISTS, e.g. "
    "loadtests/scan_lists.json): give its URL (--scan-dm-url), or leave plain+scan out of "
    "--modes; sending to the plain dm would report an unscanned dm as plain+scan"
)


@dataclass(frozen=True)
class Targets:
    dm_url: str
    edge_url: str
    #: A dm that scans plain sends (the plain+scan mode); "" when there is none, and then
    #: plain+scan cannot be run: it would measure an unscanned dm under the scanned label.
    scan_dm_url: str = ""

    def send_base(self, scenario: str) -> str:
        """Where a scenario's sends go: the scanning dm for scanned modes."""
        if mode_of(scenario) not in SCANNED_MODES:
            return self.dm_url
        if not self.scan_dm_url:
            raise ValueError(NO_SCAN_DM)
        return self.scan_dm_url


@dataclass
class Account:
    user_id: str
    device_id: str
    token: str
    suite: str | None = None
    #: base64url of the device key seed (sealed modes); the load test holds the private key.
    key_seed: str | None = None

    def device_key(self) -> envelope.DeviceKey:
        if self.suite is None or self.key_seed is None:
            raise ValueError("this account has no device key")
        return envelope.DeviceKey.from_seed(self.suite, b64url_decode(self.key_seed))


@dataclass
class Pair:
    scenario: str
    sender: Account
    recipient: Account
    conversation_id: str
    media_id: str
    #: View pairs: the shared message the viewer opens, and the cursor just before it.
    message_id: str | None = None
    read_after: str | None = None
    shared_at: float = 0.0

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Pair:
        return cls(
            **{**doc, "sender": Account(**doc["sender"]), "recipient": Account(**doc["recipient"])}
        )


@dataclass
class SeedFile:
    dm_url: str
    edge_url: str
    pairs: dict[str, list[Pair]] = field(default_factory=dict)
    created_at: float = 0.0
    session_ttl_s: int = SESSION_TTL_S

    def save(self, path: Path) -> None:
        doc = {
            "version": SEED_VERSION,
            "dm_url": self.dm_url,
            "edge_url": self.edge_url,
            "created_at": self.created_at,
            "session_ttl_s": self.session_ttl_s,
            "pairs": {s: [asdict(p) for p in ps] for s, ps in self.pairs.items()},
        }
        path.write_text(json.dumps(doc))
        path.chmod(0o600)  # it holds sessions and device private keys

    @classmethod
    def load(cls, path: Path) -> SeedFile:
        doc = json.loads(path.read_text())
        if doc.get("version") != SEED_VERSION:
            raise ValueError(f"{path}: unknown seed file version {doc.get('version')!r}")
        return cls(
            doc["dm_url"],
            doc["edge_url"],
            {s: [Pair.from_json(p) for p in ps] for s, ps in doc["pairs"].items()},
            float(doc["created_at"]),
            int(doc["session_ttl_s"]),
        )


def create_account(
    t: Targets, suite: str | None = None, roles: list[str] | None = None, ttl_s: int = SESSION_TTL_S
) -> Account:
    doc = call(
        "POST",
        f"{t.dm_url}/v1/users",
        json_body={"age": "adult", "region": "GB", "roles": roles or [], "ttl_s": ttl_s},
    )
    acct = Account(doc["user_id"], doc["device_id"], doc["session_token"])
    if suite is not None:
        key = envelope.DeviceKey.generate(suite)
        call(
            "PUT",
            f"{t.dm_url}/v1/devices/{acct.device_id}/key",
            token=acct.token,
            json_body={"suite": suite, "public_key": b64url_encode(key.public_bytes())},
        )
        acct.suite, acct.key_seed = suite, b64url_encode(key.seed)
    return acct


def register_media(
    t: Targets,
    owner: Account,
    *,
    origin_path: str | None = None,
    publisher_token: str | None = None,
    data: bytes | None = None,
) -> str:
    """A private video owned by ``owner``: an existing origin file, or uploaded bytes."""
    meta = media_metadata(content_type="video/mp4", visibility="private")
    if origin_path is not None:
        if publisher_token is None:
            raise ValueError("registering an origin path needs a publisher session")
        doc = call(
            "POST",
            f"{t.edge_url}/v1/media",
            token=publisher_token,
            json_body={**meta, "origin_path": origin_path, "owner": owner.user_id},
        )
    else:
        body, ctype = encode_upload(
            meta, data if data is not None else video_bytes(), filename="clip.mp4"
        )
        doc = call(
            "POST",
            f"{t.edge_url}/v1/media",
            token=owner.token,
            body=body,
            headers={"Content-Type": ctype},
        )
    return str(doc["id"])


def devices_of(t: Targets, viewer: Account, *user_ids: str) -> dict[str, list[dict[str, Any]]]:
    return {
        u: list(call("GET", f"{t.dm_url}/v1/users/{u}/devices", token=viewer.token)["devices"])
        for u in user_ids
    }


def share_once(t: Targets, pair: Pair) -> str:
    """Send one share in the pair's conversation (untimed; view pairs use it). Message id."""
    mode, s = mode_of(pair.scenario), pair.sender
    url = f"{t.send_base(pair.scenario)}/v1/conversations/{pair.conversation_id}/messages"
    if CONVERSATION_MODE[mode] == "plain":
        doc = call(
            "POST",
            url,
            token=s.token,
            json_body={"media_id": pair.media_id},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
    else:
        g = call(
            "POST",
            f"{t.edge_url}/v1/grants",
            token=s.token,
            json_body={"media_id": pair.media_id, "redeemers": 1},
        )
        cmid = envelope.new_client_message_id()
        body = envelope.seal_body(
            pair.conversation_id,
            s.user_id,
            s.device_id,
            cmid,
            envelope.new_payload(pair.media_id, g["grant"], None),
            devices_of(t, s, pair.recipient.user_id, s.user_id),
        )
        doc = call("POST", url, token=s.token, json_body={**body, "grant_id": g["grant_id"]})
    pair.read_after = pair.message_id
    pair.message_id = str(doc["id"])
    pair.shared_at = time.time()
    return pair.message_id


def make_pair(
    t: Targets,
    scenario: str,
    *,
    origin_path: str | None = None,
    publisher_token: str | None = None,
    data: bytes | None = None,
) -> Pair:
    mode = mode_of(scenario)
    suite = SUITE_OF.get(mode)
    sender, recipient = create_account(t, suite), create_account(t, suite)
    conv = call(
        "POST",
        f"{t.dm_url}/v1/conversations",
        token=sender.token,
        json_body={"members": [recipient.user_id], "mode": CONVERSATION_MODE[mode]},
    )
    media_id = register_media(
        t, sender, origin_path=origin_path, publisher_token=publisher_token, data=data
    )
    pair = Pair(scenario, sender, recipient, str(conv["id"]), media_id)
    if is_view(scenario):
        share_once(t, pair)
    return pair


def seed(
    t: Targets,
    counts: dict[str, int],
    *,
    origin_path: str | None = None,
    threads: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> SeedFile:
    """``counts[scenario]`` pairs each; media by ``origin_path`` (needs a publisher) or upload."""
    publisher = create_account(t, roles=["publisher"]).token if origin_path else None
    data = None if origin_path else video_bytes()
    jobs = [s for s, n in counts.items() for _ in range(n)]
    out = SeedFile(t.dm_url, t.edge_url, {s: [] for s in counts}, time.time())
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        futures = [
            pool.submit(make_pair, t, s, origin_path=origin_path, publisher_token=publisher, data=data)
            for s in jobs
        ]
        try:
            for fut in futures:
                pair = fut.result()
                out.pairs[pair.scenario].append(pair)
                done += 1
                if progress is not None:
                    progress(done, len(jobs))
        finally:
            for fut in futures:  # after a failure, do not create the rest
                fut.cancel()
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtests seed``: a seed file for Locust runs by hand (``--seed-file``)."""
    import argparse

    from loadtests.load.scenarios import SCENARIOS

    p = argparse.ArgumentParser(
        prog="python -m loadtests seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dm-url", required=True)
    p.add_argument("--edge-url", required=True)
    p.add_argument("--scan-dm-url", default="", help="a scanning dm, for plain+scan pairs")
    p.add_argument("--out", type=Path, required=True, help="seed file to write (mode 0600)")
    p.add_argument(
        "--pairs",
        default=",".join(f"{s}=10" for s in SCENARIOS),
        help="scenario=count,... (one pair per user; a hand-run locust --master with N "
        "workers takes disjoint strides, so seed users + N per scenario, and more if "
        "Locust spreads a class unevenly; the loadtests driver hands pairs out itself)",
    )
    p.add_argument(
        "--origin-path",
        help="register videos by this origin path (publisher role) instead of uploading one per sender",
    )
    a = p.parse_args(argv)
    try:
        counts = {k.strip(): int(v) for k, v in (x.split("=") for x in a.pairs.split(",") if x)}
    except ValueError:
        p.error("--pairs is scenario=count,...")
    if set(counts) - set(SCENARIOS):
        p.error(f"scenarios are {', '.join(SCENARIOS)}")
    if not a.scan_dm_url and any(mode_of(sc) in SCANNED_MODES for sc in counts):
        p.error(NO_SCAN_DM)
    targets = Targets(a.dm_url.rstrip("/"), a.edge_url.rstrip("/"), a.scan_dm_url.rstrip("/"))
    out = seed(targets, counts, origin_path=a.origin_path)
    out.save(a.out)
    print(f"{sum(len(v) for v in out.pairs.values())} pairs written to {a.out}")
    return 0
