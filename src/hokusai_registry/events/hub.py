"""Registry events as one component: the outbox events are emitted into and the worker that delivers
them, started and stopped together with the gateway."""

from __future__ import annotations

from collections.abc import Mapping

from hokusai_registry.events.outbox import Outbox
from hokusai_registry.events.worker import DeliveryWorker


class Events:
    """What the gateway and the promotion workflow emit events through: `emit(event, payload)`, which
    never blocks (it queues)."""

    def __init__(self, outbox: Outbox, worker: DeliveryWorker) -> None:
        self.outbox = outbox
        self.worker = worker

    def emit(self, event: str, payload: Mapping[str, object]) -> None:
        self.outbox.emit(event, payload)

    async def start(self) -> None:
        await self.worker.start()
        await self.outbox.start()

    async def stop(self) -> None:
        await self.outbox.stop()  # what is queued reaches the database first
        await self.worker.stop()
