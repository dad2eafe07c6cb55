"""The kit's own tests drive pytest inside pytest (``pytester``)."""

# pytester unloads every module first imported during an inline run; numpy refuses to be
# imported twice in one process, so the adapters' heavy libraries are loaded here first.
import pydicom  # noqa: F401
import tifffile  # noqa: F401

from acqharvest.registry import load_registry

pytest_plugins = ["pytester"]

load_registry()  # imports every installed adapter module once, outside any inline run
