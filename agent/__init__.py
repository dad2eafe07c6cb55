"""acqharvest: instrument-side acquisition metadata harvester."""

__version__ = "0.1.0"
