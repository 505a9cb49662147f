"""`make bench` rewrites docs/benchmarks.md; the sections written by hand survive it."""

from __future__ import annotations

from bench.report import kept_sections


def test_the_server_choice_section_is_kept_and_nothing_else() -> None:
    previous = (
        "# Benchmarks\n\n## Targets\n\nold figures\n\n"
        "## Server choice\n\nwhy uvicorn\n\n| a |\n\n## Auth\n\nx\n"
    )
    assert kept_sections(previous) == "\n## Server choice\n\nwhy uvicorn\n\n| a |\n"
    assert (
        kept_sections(previous.replace("## Auth\n\nx\n", ""))
        == "\n## Server choice\n\nwhy uvicorn\n\n| a |\n"
    )
    assert kept_sections("# Benchmarks\n\n## Targets\n") == ""
