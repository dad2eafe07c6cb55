"""Adapter classes that import fine but do not have the shape acqharvest requires."""

from __future__ import annotations

from acqharvest.adapter_api import AdapterInfo, AdapterOutput, Claim, Draft, FileProbe, Reader


class NoInfoAdapter:
    """Claims and extracts, but has no ``info``."""

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        return None

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        return AdapterOutput(format="NONE", metadata={})


class NoExtractAdapter:
    """Describes itself and claims, but cannot extract."""

    info = AdapterInfo(
        name="broken_no_extract",
        title="no extract",
        version="0.0.1",
        stability="experimental",
        formats=(),
        fields=(),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        return None
