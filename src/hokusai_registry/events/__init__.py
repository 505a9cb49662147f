"""Registry events: the outbox that takes events from the gateway (`outbox`), the sealed webhook secrets
(`sealing`) and the worker that delivers them, signed, with retries (`worker`)."""
