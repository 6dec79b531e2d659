"""Device private keys on the client: owner-only files, never sent anywhere."""

from __future__ import annotations

import json
from pathlib import Path

from service_kernel.encoding import b64url_decode, b64url_encode
from service_kernel.files import atomic_write

from .envelope import DeviceKey


def save(key: DeviceKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps({"suite": key.suite, "seed": b64url_encode(key.seed)}).encode(), 0o600)


def load(path: Path) -> DeviceKey:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} is readable by others; chmod 600 it")
    doc = json.loads(path.read_text())
    return DeviceKey.from_seed(doc["suite"], b64url_decode(doc["seed"]))


def load_or_create(path: Path, suite: str) -> DeviceKey:
    if path.exists():
        key = load(path)
        if key.suite != suite:
            raise ValueError(f"{path} holds a {key.suite} key, not {suite}")
        return key
    key = DeviceKey.generate(suite)
    save(key, path)
    return key
