"""`bench.syscalls` reads strace's summary into calls per system call (the figures themselves are
measured by `make bench` and `python -m bench.syscalls`, never asserted)."""

from __future__ import annotations

from bench.syscalls import parse_summary

# `strace -c -f -o FILE` as strace 6.1 writes it: rows with and without an errors column, then the total.
SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 41.20    0.012345           4      3012           write
 30.10    0.009001           2      2040        12 read
  0.05    0.000015           7         2           epoll_pwait
  0.00    0.000000           0         1           rseq
------ ----------- ----------- --------- --------- ----------------
100.00    0.021361           4      5055        12 total
"""


def test_calls_per_system_call_without_the_total() -> None:
    counts = parse_summary(SUMMARY)
    assert counts == {"write": 3012, "read": 2040, "epoll_pwait": 2, "rseq": 1}
    assert sum(counts.values()) == 5055


def test_an_empty_summary_counts_nothing() -> None:
    assert parse_summary("") == {}
    assert not parse_summary("strace: Process 1 attached\n")
