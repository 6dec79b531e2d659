"""The audit log dm writes and its auditors read: ``cdn_auth.audit`` (one log with the
edge's moderator takedowns), trimmed by dm's retention setting."""

from __future__ import annotations

from cdn_auth.audit import FIELDS, AuditLog

__all__ = ["FIELDS", "AuditLog"]
