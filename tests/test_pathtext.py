"""File names that are not valid UTF-8: the percent form and the registry values."""

from __future__ import annotations

import json
import os

from acqharvest.pathtext import escape, from_sql, is_text, to_sql, unescape


def name(raw: bytes) -> str:
    """The text Python gives for a name with these bytes (as ``os.listdir`` would)."""
    return os.fsdecode(raw)


def test_valid_names_are_left_exactly_as_they_are() -> None:
    for text in ("plain.tif", "café/µm 100%.tif", "caf%E9.tif", "日本語.dcm", ""):
        assert is_text(text)
        assert escape(text) is text
        assert to_sql(text) is text


def test_undecodable_bytes_and_percent_signs_are_escaped_and_nothing_else() -> None:
    assert escape(name(b"caf\xe9.dcm")) == "caf%E9.dcm"
    assert escape(name(b"5\xb5m/scan 100%.tif")) == "5%B5m/scan 100%25.tif"
    # valid multi-byte characters stay readable beside an undecodable byte
    assert escape(name("é".encode() + b"\xe9")) == "é%E9"
    # a truncated UTF-8 sequence is bytes, not a character
    assert escape(name(b"\xc3.tif")) == "%C3.tif"


def test_every_byte_round_trips_through_the_percent_form() -> None:
    for byte in range(0x80, 0x100):
        raw = b"a%" + bytes([byte]) + b"%41z"
        escaped = escape(name(raw))
        # what JSON, UTF-8 output and SQLite all accept
        assert is_text(escaped)
        assert json.loads(json.dumps(escaped, ensure_ascii=False)) == escaped
        assert escaped == f"a%25%{byte:02X}%2541z"
        assert os.fsencode(unescape(escaped)) == raw


def test_a_literal_percent_name_and_an_undecodable_name_stay_apart() -> None:
    literal, latin1 = "caf%E9.tif", name(b"caf\xe9.tif")
    # the same text, told apart by the flag that goes with an escaped text
    assert escape(literal) == escape(latin1)
    assert (is_text(literal), is_text(latin1)) == (True, False)
    assert unescape(escape(latin1)) == latin1


def test_registry_values_keep_valid_text_and_store_other_names_as_their_bytes() -> None:
    latin1 = name(b"/data/Jos\xe9/caf\xe9.dcm")
    stored = to_sql(latin1)
    assert stored == b"/data/Jos\xe9/caf\xe9.dcm"
    assert from_sql(stored) == latin1
    assert from_sql(to_sql("/data/café.dcm")) == "/data/café.dcm"


def test_text_no_file_name_gives_is_escaped_without_raising() -> None:
    made_up = "odd \ud800 surrogate"  # not a surrogateescape byte: an adapter's own text
    escaped = escape(made_up)
    assert is_text(escaped)
    assert escaped == "odd %ED%A0%80 surrogate"
