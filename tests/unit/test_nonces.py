"""Nonces for the gateway's assertions: random, of the documented size, never repeated, also not by a
forked worker that inherited its parent's pool."""

from __future__ import annotations

import base64
import os
import re

from hokusai_registry.transport.nonces import NONCE_BYTES, new_nonce


def test_nonces_are_random_and_never_repeat_across_pool_refills() -> None:
    drawn = [new_nonce() for _ in range(2_000)]  # several refills of the pool
    assert len(set(drawn)) == len(drawn)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", nonce) for nonce in drawn)
    assert {len(base64.urlsafe_b64decode(nonce)) for nonce in drawn} == {NONCE_BYTES}


def test_a_forked_process_draws_other_nonces_than_its_parent() -> None:
    new_nonce()  # the pool holds unused bytes the child would otherwise inherit
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, ",".join(new_nonce() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        in_child = set(pipe.read().split(","))
    in_parent = {new_nonce() for _ in range(10)}
    assert len(in_child) == 10 and not in_child & in_parent
