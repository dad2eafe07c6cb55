"""Example acqharvest adapter: the ExampleScope text acquisition log (``*.acqlog``).

Formats and variants: version 1 logs, UTF-8 text. The first line is the magic
``ACQLOG 1``; ``key: value`` header lines follow until ``---``; then exactly ``records``
record lines (``HH:MM:SS exposure_s=<seconds> channel=<name>``) and a final ``END``.

Fields filled: instrument model and serial, operator, acquisition start, pixel size, and
one channel per record (name and exposure). Not read: nothing else is in the file.

Proved by ``samples/run-001.acqlog`` (every header key) and ``samples/run-002.acqlog``
(the minimum). This package exists to test acqharvest's plugin path end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acqharvest.adapter_api import (
    AdapterError,
    AdapterInfo,
    AdapterOutput,
    Claim,
    Draft,
    FileProbe,
    FormatSpec,
    Reader,
    normalized_fields,
)

MAGIC = b"ACQLOG 1\n"
#: a log is a few KiB; anything past this is not one and is not read.
MAX_BYTES = 1 << 20

_FIELDS = normalized_fields(
    {
        "instrument_reported.model": "header 'instrument'",
        "instrument_reported.serial_number": "header 'serial'",
        "operator": "header 'operator'",
        "acquired": "header 'started'",
        "pixel_size_um.x": "header 'pixel_size_um'",
        "pixel_size_um.y": "header 'pixel_size_um'",
        "channels": "one per record: channel= and exposure_s=",
        "image.frames": "header 'records'",
    }
)


class ExampleLogAdapter:
    """ExampleScope acquisition logs."""

    info = AdapterInfo(
        name="example_log",
        title="ExampleScope acquisition log",
        version="0.1.0",
        stability="experimental",
        formats=(FormatSpec(name="ACQLOG", extensions=(".acqlog",), magic="ACQLOG 1 line"),),
        fields=_FIELDS,
        samples=("samples/run-001.acqlog", "samples/run-002.acqlog"),
    )

    def claim(self, probe: FileProbe, reader: Reader) -> Claim | None:
        if not probe.head.startswith(MAGIC):
            return None
        return Claim(group_key=f"example_log:{probe.path}", confidence=1.0)

    def extract(self, draft: Draft, reader: Reader) -> AdapterOutput:
        path = draft.primary
        with reader.open(path) as handle:
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise AdapterError(path, f"larger than {MAX_BYTES} bytes; not an acquisition log")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise AdapterError(path, f"not UTF-8 text: {error}") from error
        header, records = _parse(path, text)
        return AdapterOutput(
            format="ACQLOG",
            metadata=_metadata(path, header, records),
            original_metadata={"header": header, "records": records},
            started=header.get("started"),
        )


def _parse(path: Path, text: str) -> tuple[dict[str, str], list[str]]:
    lines = text.split("\n")
    if lines[0] != MAGIC.decode().strip():
        raise AdapterError(path, "first line is not 'ACQLOG 1'")
    if "---" not in lines:
        raise AdapterError(path, "truncated: no '---' after the header")
    split = lines.index("---")
    header: dict[str, str] = {}
    for line in lines[1:split]:
        key, sep, value = line.partition(": ")
        if not sep:
            raise AdapterError(path, f"header line {line!r} is not 'key: value'")
        header[key] = value
    try:
        count = int(header.get("records", ""))
    except ValueError:
        raise AdapterError(path, "header 'records' is missing or not a number") from None
    body = lines[split + 1 :]
    if len(body) < count + 1 or body[count] != "END":
        raise AdapterError(path, f"truncated: header promises {count} records and an END line")
    return header, body[:count]


def _metadata(path: Path, header: dict[str, str], records: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"image": {"frames": len(records)}}
    instrument = {
        key: header[source]
        for key, source in (("model", "instrument"), ("serial_number", "serial"))
        if header.get(source)
    }
    if instrument:
        meta["instrument_reported"] = instrument
    if header.get("operator"):
        meta["operator"] = header["operator"]
    if header.get("started"):
        meta["acquired"] = header["started"]
    if header.get("pixel_size_um"):
        try:
            size = float(header["pixel_size_um"])
        except ValueError:
            raise AdapterError(path, "header 'pixel_size_um' is not a number") from None
        meta["pixel_size_um"] = {"x": size, "y": size}
    meta["channels"] = [_channel(path, record) for record in records]
    return meta


def _channel(path: Path, record: str) -> dict[str, Any]:
    fields = dict(part.split("=", 1) for part in record.split()[1:] if "=" in part)
    try:
        return {"name": fields["channel"], "exposure_s": float(fields["exposure_s"])}
    except (KeyError, ValueError):
        raise AdapterError(path, f"record {record!r} lacks channel= or exposure_s=") from None
