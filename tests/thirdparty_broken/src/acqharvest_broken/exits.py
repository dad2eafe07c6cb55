"""Exits at import, as scripts turned into packages do when a dependency is missing."""

import sys

sys.exit("acqharvest_broken: the vendor SDK is not installed")
