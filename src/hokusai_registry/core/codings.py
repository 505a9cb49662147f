"""Decoding gzip and deflate request bodies as they arrive, never past a limit (pure).

A compression bomb expands a thousandfold: each piece is inflated with zlib's `max_length` at most one byte
past what the limit leaves, so the decoded bytes held in memory never exceed the limit, whatever the ratio.
"""

from __future__ import annotations

import zlib

from hokusai_registry.core.refusals import Reason, Refusal


class DecodedTooLarge(Exception):
    """The decoded body went over the limit."""


class Decoder:
    """Feed the coded body piece by piece; each call returns the decoded bytes so far, then `finish()`.
    `coding` is "gzip" (several members allowed, as gzip.decompress takes them) or "deflate" (zlib-wrapped
    or raw, as MLflow accepts both)."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self._left = limit
        self._pending = b""  # deflate: the first bytes, until the wrapping can be told
        self._inflater: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
        )

    def _invalid(self) -> Refusal:
        return Refusal(
            Reason.BAD_CODING,
            f"the request body is not valid {self.coding} data (its Content-Encoding says it is).",
        )

    def decode(self, data: bytes) -> list[bytes]:
        if self._inflater is None:
            data = self._pending + data
            if len(data) < 2:
                self._pending = data
                return []
            self._pending = b""
            zlib_wrapped = data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        out: list[bytes] = []
        while data:
            inflater = self._inflater
            try:
                piece = inflater.decompress(data, self._left + 1)
            except zlib.error:
                raise self._invalid() from None
            if len(piece) > self._left:
                raise DecodedTooLarge
            self._left -= len(piece)
            if piece:
                out.append(piece)
            data = inflater.unconsumed_tail
            if inflater.eof:
                trailing = inflater.unused_data
                if trailing and self.coding == "gzip":  # the next gzip member
                    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    data = trailing
                elif trailing:
                    raise self._invalid()
        return out

    def finish(self) -> None:
        """The body has ended: it must have ended the coded stream too."""
        if self._inflater is None or not self._inflater.eof:
            raise self._invalid()
