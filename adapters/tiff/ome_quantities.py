"""OME quantities: the unit tables of the OME schema and the attribute readers that use them.

Every quantity in OME-XML may carry a unit attribute (``PhysicalSizeXUnit``,
``EmissionWavelengthUnit``, ``PowerUnit``...) and falls back to the schema's default unit
when it is absent. These readers convert to the units the package's field names carry
(µm, nm, s, mW, MHz, V, mbar, °C, %), and drop a value that is not a finite number in a
known unit with a note naming the element and attribute. The vendor TIFF readers and the
Zarr adapter convert lengths through ``to_um`` too.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

from acqharvest.adapters.safexml import local

#: OME UnitsLength symbols (and ImageJ's spellings), as micrometres per unit.
UNITS_UM = {
    "km": 1e9,
    "hm": 1e8,
    "dam": 1e7,
    "m": 1e6,
    "dm": 1e5,
    "cm": 1e4,
    "mm": 1e3,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek mu U+03BC
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "fm": 1e-9,
    "Å": 1e-4,
    "angstrom": 1e-4,
    "thou": 25.4,
    "in": 25400.0,
    "inch": 25400.0,
    "ft": 304800.0,
    "yd": 914400.0,
    "pt": 25400.0 / 72,
}
#: OME UnitsTime symbols as seconds per unit.
SECONDS = {
    "d": 86400.0,
    "h": 3600.0,
    "min": 60.0,
    "s": 1.0,
    "ds": 1e-1,
    "cs": 1e-2,
    "ms": 1e-3,
    "µs": 1e-6,
    "μs": 1e-6,
    "us": 1e-6,
    "ns": 1e-9,
    "ps": 1e-12,
}
NANOMETRES = {unit: factor * 1e3 for unit, factor in UNITS_UM.items()}
#: OME UnitsPower symbols as milliwatts per unit.
MILLIWATTS = {
    "GW": 1e12,
    "MW": 1e9,
    "kW": 1e6,
    "W": 1e3,
    "mW": 1.0,
    "µW": 1e-3,
    "μW": 1e-3,
    "uW": 1e-3,
    "nW": 1e-6,
    "pW": 1e-9,
}
#: OME UnitsFrequency symbols as megahertz per unit.
MEGAHERTZ = {"GHz": 1e3, "MHz": 1.0, "kHz": 1e-3, "Hz": 1e-6, "mHz": 1e-9}
#: OME UnitsElectricPotential symbols as volts per unit.
VOLTS = {"MV": 1e6, "kV": 1e3, "V": 1.0, "mV": 1e-3, "µV": 1e-6, "μV": 1e-6, "uV": 1e-6}
#: OME UnitsPressure symbols as millibars per unit.
MILLIBARS = {
    "MPa": 1e4,
    "kPa": 10.0,
    "hPa": 1.0,
    "Pa": 1e-2,
    "bar": 1e3,
    "dbar": 1e2,
    "cbar": 10.0,
    "mbar": 1.0,
    "atm": 1013.25,
    "psi": 68.947572932,
    "Torr": 1013.25 / 760,
    "mTorr": 1013.25 / 760_000,
    "mm Hg": 1.333223874,
}
#: OME UnitsTemperature symbols as (scale, offset) giving degrees Celsius.
CELSIUS = {
    "°C": (1.0, 0.0),
    "K": (1.0, -273.15),
    "°F": (5 / 9, -32 * 5 / 9),
    "°R": (5 / 9, -273.15),
}


def to_um(number: Any, unit: str | None) -> float | None:
    """``number`` in ``unit`` (µm when None) as micrometres; None when unknown or not > 0."""
    return scaled(number, unit, UNITS_UM, "µm")


def scaled(
    number: Any, unit: str | None, table: dict[str, float], default: str, *, signed: bool = False
) -> float | None:
    amount = finite(number) if signed else positive(number)
    factor = table.get((unit or default).strip())
    if factor is None or amount is None:
        return None
    return round(amount * factor, 9)


def finite(number: Any) -> float | None:
    """``number`` as a finite float of any sign, else None."""
    try:
        amount = float(number)
    except (TypeError, ValueError):
        return None
    return amount if math.isfinite(amount) else None


def positive(number: Any) -> float | None:
    """``number`` as a finite float above zero, else None (``inf``, ``NaN``, text, 0)."""
    try:
        amount = float(number)
    except (TypeError, ValueError):
        return None
    return amount if math.isfinite(amount) and amount > 0 else None


def quantity(
    element: ET.Element,
    attribute: str,
    table: dict[str, float],
    default: str,
    notes: list[str],
    *,
    signed: bool = False,
) -> float | None:
    """An attribute in its ``...Unit`` (``default`` when absent), scaled by ``table``.

    Positive unless ``signed`` (a time offset, a stage position). A value that is present
    but unusable is dropped with a note naming the attribute.
    """
    text = element.get(attribute)
    if text is None:
        return None
    unit = element.get(f"{attribute}Unit")
    where = f"{local(element.tag)} {attribute}"
    if table.get((unit or default).strip()) is None:
        notes.append(f"{where}: unit {unit!r} is not known; dropped")
        return None
    amount = scaled(text, unit, table, default, signed=signed)
    if amount is None:
        kind = "finite" if signed else "finite positive"
        notes.append(f"{where}: not a {kind} number; dropped")
    return amount


def celsius(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """A temperature in its ``...Unit`` (°C when absent) as degrees Celsius."""
    text = element.get(attribute)
    if text is None:
        return None
    unit = (element.get(f"{attribute}Unit") or "°C").strip()
    scale = CELSIUS.get(unit)
    amount = finite(text)
    where = f"{local(element.tag)} {attribute}"
    if scale is None:
        notes.append(f"{where}: unit {unit!r} is not known; dropped")
        return None
    if amount is None or amount * scale[0] + scale[1] < -273.15:
        notes.append(f"{where}: not a temperature; dropped")
        return None
    return round(amount * scale[0] + scale[1], 9)


def fraction_percent(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """An OME PercentFraction (0 to 1) as percent; outside that range it is dropped."""
    text = element.get(attribute)
    amount = finite(text)
    if text is None:
        return None
    if amount is None or not 0 <= amount <= 1:
        notes.append(f"{local(element.tag)} {attribute}: not a fraction from 0 to 1; dropped")
        return None
    return round(amount * 100, 9)


def plain_number(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """A unitless number of any sign (a gain, an offset); noted when unusable."""
    text = element.get(attribute)
    amount = finite(text)
    if text is not None and amount is None:
        notes.append(f"{local(element.tag)} {attribute}: not a finite number; dropped")
    return amount


def positive_attribute(element: ET.Element, attribute: str, notes: list[str]) -> float | None:
    """A unitless positive attribute (a magnification, an NA); noted when unusable."""
    text = element.get(attribute)
    amount = positive(text)
    if text is not None and amount is None:
        notes.append(f"{local(element.tag)} {attribute}: not a finite positive number; dropped")
    return amount
