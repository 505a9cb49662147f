"""Registry events: what the gateway tells whoever listens (webhooks) about promotions and protections.

One narrow seam: `RegistryEvents.emit(event, payload)`. The gateway calls it after the change is made and
recorded; an implementation must not block (queue the payload and deliver it elsewhere) and must not
raise. Events emitted here: `promotion.requested`, `promotion.approved`, `promotion.rejected`,
`promotion.applied`, `promotion.cancelled`, `promotion.stale` and `protection.overridden`; their payloads
are in docs/promotions.md. An applied promotion also makes the event of the write it stands for
(`policy/registry_events.py`), as forwarded writes do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

log = logging.getLogger(__name__)


class RegistryEvents(Protocol):
    def emit(self, event: str, payload: Mapping[str, object]) -> None: ...


def emit_safely(events: RegistryEvents, event: str, payload: Mapping[str, object]) -> None:
    """An event, never failing the change it reports."""
    try:
        events.emit(event, payload)
    except Exception:  # a listener's failure must not undo or fail a recorded change
        log.exception("registry event %s could not be handed over", event)
