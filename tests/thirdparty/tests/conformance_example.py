"""The vendor's own conformance test: all it takes is a subclass naming the entry point.

Cases and samples live in the installed package (``acqharvest_example/cases``), so the
defaults find them. Run it with ``pytest`` in an environment where both acqharvest and this
distribution are installed; ``--acqharvest-regenerate`` rewrites the goldens.
"""

from __future__ import annotations

from collections.abc import Iterator

from acqharvest.testing import AdapterConformance


class TestExampleLogConformance(AdapterConformance):
    entry_point = "example_log"

    def truncations(self, data: bytes) -> dict[str, int]:
        # the final newline is optional in a text log; cut into the END line instead
        cuts = super().truncations(data)
        del cuts["last byte missing"]
        return {**cuts, "END line cut": len(data) - 3}

    def header_lies(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        header, _, _ = data.partition(b"\n---\n")
        for line in header.split(b"\n"):
            if line.startswith(b"records: "):
                yield "records count past the end", data.replace(line, b"records: 99", 1)
        yield "no header end", data.replace(b"\n---\n", b"\n", 1)
