"""acqharvest.testing: the conformance kit every adapter, built-in or third-party, passes.

Installing acqharvest registers this package as a pytest plugin (``pytest11``), so a
vendor's repository gets it with no configuration. Write one test module::

    # tests/test_conformance.py
    from acqharvest.testing import AdapterConformance

    class TestMyAdapter(AdapterConformance):
        entry_point = "my_format"        # the name in [project.entry-points."acqharvest.adapters"]

and one golden case per sample file in ``cases/`` beside your adapter module::

    # cases/run-001.yaml (paths relative to your package folder, primary file first)
    files:
      - samples/run-001.mylog

Then ``pytest --acqharvest-regenerate`` writes ``cases/run-001.expected.json``; review it,
commit it, and from then on ``pytest`` compares against it. See
:mod:`acqharvest.testing.conformance` for the list of checks and the hooks to override
(``truncations``, ``wrong_magic``, ``header_lies``, which has no default: override it or
set ``header_lies_waiver`` to a reason), and :mod:`acqharvest.testing.golden`
for the case and golden formats.
"""

from acqharvest.testing.conformance import AdapterConformance
from acqharvest.testing.golden import Case, golden_of, load_cases, write_case

__all__ = ["AdapterConformance", "Case", "golden_of", "load_cases", "write_case"]
