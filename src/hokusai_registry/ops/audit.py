"""The audit log: one JSON object per line for every security-relevant event.

Events: key.created / key.rotated / key.revoked and team.* / grant.* (CLI, admin API and pages alike;
`admin/permissions.py`), webhook.created / webhook.removed / webhook.tested (`admin/webhooks.py`),
auth.failed, permission.denied, rate_limited, registry writes (registered model created, renamed or
deleted, model version created or deleted, alias set or deleted, stage changed) and prompt-lab runs (the
table is `policy/inspection.py`), protection.added / protection.removed / protection.overridden and
promotion.requested / approved / rejected / cancelled / stale / applied / tag_failed
(`admin/promotions.py`, `gateway/protection.py`). Lines carry key ids, owners and client addresses, never a
secret; they still pass through `redact` like every other log line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from hokusai_registry.core.redaction import redact
from hokusai_registry.ops.logs import BatchingStderrHandler

# A channel name that log readers filter on, not a module path: it stays when modules move.
AUDIT_LOGGER = "hokusai_registry.audit"
_audit = logging.getLogger(AUDIT_LOGGER)


class AuditFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": AUDIT_LOGGER,
            "audit": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        return redact(json.dumps(line, default=str))


def configure_audit(destination: str) -> None:
    """`stderr` or a file path; audit lines are JSON whatever LOG_FORMAT says."""
    handler: logging.Handler
    if destination == "stderr":
        handler = BatchingStderrHandler()
    else:
        path = Path(destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(AuditFormatter())
    _audit.handlers[:] = [handler]
    _audit.setLevel(logging.INFO)
    _audit.propagate = False


def audit(event: str, **fields: Any) -> None:
    """Write one audit line; fields with the value None are left out."""
    _audit.info(event, extra={"fields": {k: v for k, v in fields.items() if v is not None}})
