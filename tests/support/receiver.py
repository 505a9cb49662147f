"""A webhook receiver on loopback: a real HTTP server in a thread that records every delivery and
answers with a status the test sets (200 by default). `stop()` closes its port (the receiver is down);
`start()` opens the same port again. With `hold` set, a delivery is recorded with status 0 and left
without an answer until `hold` is cleared (a receiver that hangs)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hokusai_registry.policy import webhooks


@dataclasses.dataclass
class Delivery:
    headers: dict[str, str]  # names lower-cased
    body: str
    status: int  # what the receiver answered

    @property
    def id(self) -> str:
        return self.headers[webhooks.DELIVERY_ID_HEADER.lower()]

    @property
    def event(self) -> str:
        return self.headers[webhooks.EVENT_HEADER.lower()]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def verifies(self, secret: str) -> bool:
        """The signature checks out under `secret`, with a fresh timestamp (what a receiver checks)."""
        return webhooks.verify(
            secret,
            self.id,
            self.headers[webhooks.TIMESTAMP_HEADER.lower()],
            self.body,
            self.headers[webhooks.SIGNATURE_HEADER.lower()],
            now=time.time(),
            tolerance=300,
        )


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.deliveries: list[Delivery] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.hold = False
        self._released = threading.Condition()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode("utf-8")
                status = 0 if receiver.hold else receiver.status
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery({k.lower(): v for k, v in self.headers.items()}, body, status)
                    )
                if status == 0:
                    with receiver._released:
                        receiver._released.wait_for(lambda: not receiver.hold, 120)
                    status = receiver.status
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def release(self) -> None:
        """Answer the held deliveries (and hold no more)."""
        with self._released:
            self.hold = False
            self._released.notify_all()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self, event: str | None = None, status: int | None = 200) -> list[Delivery]:
        """The deliveries so far (of `event`, answered `status`; None: any)."""
        with self._lock:
            return [
                delivery
                for delivery in self.deliveries
                if (event is None or delivery.event == event)
                and (status is None or delivery.status == status)
            ]
