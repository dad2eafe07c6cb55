"""Adapters that fail to load; each module fails in the way a real vendor package might."""
