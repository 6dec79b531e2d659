"""What each mode lets a safety team do, row by row against the seed articles' claims.

One definition, rendered in the load-test report's appendix and kept in
docs/safety.md (a test checks the two agree and that every named test
exists).  Each row names the test that shows it.
"""

from __future__ import annotations

HEAD = ["capability (the articles' claim)", "plain", "sealed (E2EE)", "shown by"]

ROWS: list[list[str]] = [
    [
        'Scanning ("AI-driven scanning ... to monitor DMs")',
        "every send: keyword/pattern lists, the media's hash-bank verdict, an external "
        "classifier hook with a timeout; verdict allow, flag or hold",
        "metadata only (sender, conversation, envelope count and size); the scanner says so "
        '(saw="metadata" in dm_scans_total and its log) and allows',
        "test_keyword_alert_flags_and_still_delivers, test_classifier_timeout_falls_back_to_flag, "
        "test_sealed_scanner_sees_metadata_only",
    ],
    [
        'Keyword alerts ("if a keyword triggers an alert, a moderator can step in")',
        "flag: delivered, alert queued; hold: stored, delivered to nobody (no read, push or "
        "pointer) until a moderator releases it",
        "none: no plaintext reaches the server",
        "test_keyword_alert_flags_and_still_delivers, test_held_message_reaches_nobody_until_released",
    ],
    [
        'Reports ("if a user reports a message")',
        "the server's own copy of the reported message",
        "only what the reporter unlocks: plaintext + franking key, verified against the "
        "server's countersignature; forgeries refused",
        "test_report_goes_to_the_moderation_queue, test_genuine_report_verified_forged_rejected",
    ],
    [
        'Human review ("only authorized employees ... under strict conditions")',
        "one queue for reports, alerts, media holds; a moderator sees the message and N "
        "messages either side, media through a 60 s moderator pointer",
        "the reported message and its media only; the rest of the thread stays sealed",
        "test_moderator_opens_plain_report_in_context, "
        "test_moderator_opens_sealed_report_with_only_the_unlocked_message, "
        "test_remove_message_action_unsends_it_for_everyone",
    ],
    [
        'Access controls ("only ... in response to a valid legal request or a user report")',
        "opening content needs a report, alert or legal-request id covering it; every view "
        "and action in an append-only audit log (an action is recorded before it takes "
        "effect) that auditors read and no moderator session can",
        "same rules; there is less to open",
        "test_view_without_justification_refused, "
        "test_every_view_and_action_in_audit_log_and_moderators_cannot_read_it, "
        "test_every_action_audited_first_and_none_without_its_record",
    ],
    [
        'Legal requests ("cooperate with law enforcement")',
        "export of the conversation's messages inside the request's time scope (bounded, audited)",
        "the metadata the platform has (members, times, senders, envelope counts and sizes) "
        "and an explicit statement that content is not available",
        "test_legal_export_plain_messages_in_scope, "
        "test_legal_export_sealed_gives_metadata_and_says_content_unavailable",
    ],
    [
        'Known-bad media ("the exchange of illicit material")',
        "at the CDN: MD5/SHA-256 and PDQ (keyframes) matched against hash banks at upload "
        "or origin-path registration; refused or held per bank",
        "the same: the video sits on the CDN in both modes, so sealing the DM does not hide "
        "it from the banks",
        "test_banked_video_refused_at_upload, "
        "test_banked_video_registered_by_origin_path_refused_or_held_like_an_upload, "
        "test_sealed_sender_cannot_share_a_banked_video, "
        "test_hold_bank_registers_media_held_until_released, "
        "test_bank_media_action_takes_down_every_copy",
    ],
    [
        "Takedown speed",
        "a takedown or a newly banked hash reaches every edge through the revocation stream "
        "(bench revocation: p99 well under 100 ms on one machine)",
        "the same path and speed",
        "test_banked_later_taken_down_at_every_edge, "
        "test_takedown_gives_410_to_everyone_and_refuses_sends",
    ],
    [
        "Latency of keeping eyes on vs off",
        "plain+scan mode in the load test: plain sends scanned with realistic lists",
        "sealed and sealed-pq modes: client crypto and grants",
        "test_json_has_the_contracted_fields (report), the quick run in docs/safety.md",
    ],
]


def test_names() -> list[str]:
    """Every test function the table names."""
    out = []
    for row in ROWS:
        for part in row[3].replace("(report)", "").split(","):
            name = part.strip().split(" ")[0]
            if name.startswith("test_"):
                out.append(name)
    return out
