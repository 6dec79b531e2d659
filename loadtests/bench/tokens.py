"""Pointers and grants minted in-process with the media API's key ring, exactly as the
edge trusts them: the sealed benchmark's fetch workloads and micro costs, and the load
test's floor of the sealed overhead (:mod:`loadtests.report.floor`), use the same ones."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cdn_auth import grant as grant_mod
from cdn_auth import pointer as pointer_mod
from cdn_auth.token_format import SigningKey, VerifyKey
from dm import envelope
from service_kernel.ids import new_id

TOKEN_TTL_S = 900  # the edge's default max_token_lifetime_s
TEXT = "look at this"


@dataclass(frozen=True)
class Tokens:
    """The media API's key ring, as the edge trusts it: mint and verify both token kinds."""

    signer: SigningKey
    keys: dict[str, VerifyKey]
    media_id: str

    def grant(self, grant_id: str, sharer: str = "alice") -> str:
        return grant_mod.mint(
            self.signer,
            grant_id=grant_id,
            media_id=self.media_id,
            max_redeemers=1,
            sharer=sharer,
            now=time.time(),
            ttl_s=TOKEN_TTL_S,
        )

    def pointer(self, message_id: str, reader: str = "bob") -> str:
        return pointer_mod.mint(
            self.signer,
            media_id=self.media_id,
            sub=reader,
            conversation_id="c_bench",
            message_id=message_id,
            now=time.time(),
            ttl_s=TOKEN_TTL_S,
        )


def sample_payload(tokens: Tokens) -> envelope.Payload:
    """What a sealed video share carries: the media id, a real grant, a caption, a franking key."""
    return envelope.Payload(
        tokens.media_id, tokens.grant(new_id("g")), TEXT, envelope.new_franking_key()
    )
