"""``AdapterConformance``: the checks every acqharvest adapter passes, as a pytest base class.

Subclass it in a test module (the class name must start with ``Test``)::

    from acqharvest.testing import AdapterConformance

    class TestExampleLog(AdapterConformance):
        entry_point = "example_log"      # or: adapter = ExampleLogAdapter()

That is all when the adapter's package holds a ``cases/`` folder whose case files name
package-relative inputs. Otherwise set ``cases_dir`` and ``samples_root``. Each check is
its own test method, parametrised over the cases, so a failure names the check and the case:

``test_info``                 ``info`` is valid and every normalized field is declared
                              with the catalogue's type and unit
``test_golden``               the output equals ``<case>.expected.json`` (diff on mismatch;
                              ``incomplete``, when the adapter sets it, is part of it);
                              when regenerating, it writes the golden and skips (the run
                              then ends failed, so regeneration never passes for a check)
``test_fields``               every emitted key is declared; values have the declared type;
                              ``incomplete`` is None or a reason
``test_deterministic``        two extractions give the same output
``test_read_only``            extract and claim write nothing: no change in the tree around
                              the case (:func:`~acqharvest.testing.harness.case_reach`), no
                              file opened for writing or removed anywhere through Python, no
                              handle left open (on Linux: none opened for writing either)
``test_claims_own_files``     ``claim`` returns a Claim for every file of the case, one group,
                              and the case lists the files as the agent would draft them:
                              the primary its claims elect first, every file the claims
                              ``expect`` present (members and companion files included)
``test_not_outbid``           no other installed adapter claims the case's files with equal
                              or higher confidence
``test_leaves_others_alone``  ``claim`` is None for every other adapter's ``info.samples``
``test_zero_byte``            an empty file: no claim, ``AdapterError`` from extract
``test_truncated``            copies cut at :meth:`truncations`: ``AdapterError``
``test_wrong_magic``          :meth:`wrong_magic`: no claim, ``AdapterError``
``test_header_lies``          :meth:`header_lies` variants: ``AdapterError``; fails when
                              there are none, unless ``header_lies_waiver`` gives a reason
                              (then skipped, and the reason printed at the end of every run)

Every adapter call runs under a deadline (``deadline_seconds``); a hang is a failure naming
the input. Variants are written under pytest's ``tmp_path``, never beside the samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import pytest

from acqharvest.adapter_api import Adapter, AdapterError, AdapterOutput, Claim, Draft
from acqharvest.readonly import FileReader
from acqharvest.registry import load_registry
from acqharvest.testing import checks, golden, harness, plugin


@cache
def _installed() -> dict[str, Adapter]:
    """Every adapter installed in this environment, loaded once per test process."""
    return dict(load_registry().adapters)


@cache
def _load(entry_point: str) -> Adapter:
    """One adapter by entry-point name, loaded once per test process."""
    registry = load_registry(enabled={entry_point})
    if entry_point not in registry.adapters:
        errors = "; ".join(e.error for e in registry.errors) or "no such entry point"
        raise LookupError(f"adapter entry point {entry_point!r}: {errors}")
    return registry.adapters[entry_point]


class AdapterConformance:
    """Base class of an adapter's conformance tests; see the module docstring."""

    #: the adapter under test; or leave None and name its ``entry_point``.
    adapter: ClassVar[Adapter | None] = None
    #: the ``acqharvest.adapters`` entry-point name to load the adapter from.
    entry_point: ClassVar[str | None] = None
    #: folder of ``<case>.yaml`` files; default: ``cases/`` beside the adapter's module.
    cases_dir: ClassVar[Path | None] = None
    #: what case file paths are relative to; default: the adapter's package folder.
    samples_root: ClassVar[Path | None] = None
    #: where other adapters' corpus-relative samples resolve (also ``--acqharvest-corpus``).
    corpus_root: ClassVar[Path | None] = None
    #: seconds any single claim or extract may take before it counts as a hang.
    deadline_seconds: ClassVar[float] = 30.0
    #: why the format has no length, count or offset a header lie could target; setting it
    #: (with a reason, which every run reports) is the only way to pass without lies.
    header_lies_waiver: ClassVar[str | None] = None

    # ------------------------------------------------------------------ hooks to override

    def truncations(self, data: bytes) -> dict[str, int]:
        """Label -> length of the cut-short copies made from a good sample's bytes.

        Each must cut bytes the format needs (a header, an IFD, the pixel data extent);
        the default cuts inside the first bytes, at a third, at two thirds and just before
        the end. Override it when your format may end in bytes nobody needs (padding).
        """
        size = len(data)
        cuts = {
            "first 8 bytes": 8,
            "a third": size // 3,
            "two thirds": 2 * size // 3,
            "last byte missing": size - 1,
        }
        return {label: cut for label, cut in cuts.items() if 0 < cut < size}

    def wrong_magic(self, data: bytes) -> bytes:
        """A good sample's bytes with its magic destroyed; default: first 16 bytes replaced."""
        junk = b"NOT THIS FORMAT!"[: min(16, len(data))]
        return junk + data[len(junk) :]

    def header_lies(self, data: bytes) -> Iterable[tuple[str, bytes]]:
        """(label, bytes) variants whose header lies: lengths, counts or offsets past the end.

        Nothing by default, and ``test_header_lies`` fails until you override it: a lie must
        parse as far as your format's declared extents to test anything, and only your
        format knows where those are (the built-in TIFF adapter's tests point an IFD offset
        and a tag count past the end of the file). A format with no such field sets
        ``header_lies_waiver`` instead.
        """
        return ()

    # ------------------------------------------------------------------ set-up

    def the_adapter(self) -> Adapter:
        """The adapter under test."""
        if self.adapter is not None:
            return self.adapter
        if self.entry_point is None:
            raise TypeError(f"{type(self).__name__}: set 'adapter' or 'entry_point'")
        return _load(self.entry_point)

    def package_dir(self) -> Path:
        return checks.package_dir(self.the_adapter())

    def cases_folder(self) -> Path:
        return self.cases_dir if self.cases_dir is not None else self.package_dir() / "cases"

    def samples(self) -> Path:
        return self.samples_root if self.samples_root is not None else self.package_dir()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "case" in metafunc.fixturenames:
            cases = golden.load_cases(self.cases_folder())
            if not cases:
                raise golden.CaseError(
                    f"no <case>.yaml files in {self.cases_folder()}: list cases/ (and your "
                    "samples) as package data and install the adapter editable (CONTRIBUTING)"
                )
            metafunc.parametrize("case", cases, ids=[case.name for case in cases])
        if "other" in metafunc.fixturenames:
            own = self.the_adapter().info.name
            others = sorted(name for name in _installed() if name != own)
            metafunc.parametrize("other", others or ["(no other adapter installed)"])

    def _call(self, what: str, call: Any) -> Any:
        try:
            return harness.call_with_deadline(call, self.deadline_seconds, what)
        except harness.Hung as hung:
            pytest.fail(str(hung))

    def _claim(self, adapter: Adapter, path: Path) -> Claim | None:
        probe = checks.probe_of(path)
        claim: Claim | None = self._call(
            f"{adapter.info.name}.claim({path.name})", lambda: adapter.claim(probe, FileReader())
        )
        return claim

    def _extract(self, files: tuple[Path, ...], reader: FileReader | None = None) -> AdapterOutput:
        adapter = self.the_adapter()
        draft = Draft(
            f"conformance:{files[0].name}",
            files[0],
            files,
            checks.digests_of(adapter.info, files),
        )
        output: AdapterOutput = self._call(
            f"extract({files[0].name})", lambda: adapter.extract(draft, reader or FileReader())
        )
        return output

    # ------------------------------------------------------------------ checks

    def test_info(self) -> None:
        adapter = self.the_adapter()
        problems = checks.info_problems(adapter.info, self.entry_point)
        assert not problems, "\n".join(problems)

    def test_golden(self, case: golden.Case, request: pytest.FixtureRequest) -> None:
        files = case.paths(self.samples())
        try:
            actual = golden.golden_of(self._extract(files), case.root(self.samples()))
        except AdapterError as error:
            actual = golden.error_golden(str(error), case.root(self.samples()))
        if plugin.regenerating(request.config):
            golden.write_expected(case, actual)
            plugin.record_regenerated(request.config, case.expected_path)
            pytest.skip(f"regenerated {case.expected_path}; review it, re-run without the flag")
        expected = golden.read_expected(case)
        if expected is None:
            pytest.fail(f"{case.expected_path} is missing; run pytest --acqharvest-regenerate")
        if expected != actual:
            pytest.fail(
                f"{case.name}: output differs from the golden (regenerate with "
                f"--acqharvest-regenerate if the change is intended):\n"
                + golden.golden_diff(expected, actual, case.name)
            )

    def test_fields(self, case: golden.Case) -> None:
        output = self._extract(case.paths(self.samples()))
        problems = checks.field_problems(self.the_adapter().info, output)
        assert not problems, "\n".join(problems)

    def test_deterministic(self, case: golden.Case) -> None:
        files = case.paths(self.samples())
        first = golden.golden_of(self._extract(files), case.root(self.samples()))
        second = golden.golden_of(self._extract(files), case.root(self.samples()))
        if first != second:
            pytest.fail("two extractions differ:\n" + golden.golden_diff(first, second, case.name))

    def test_read_only(self, case: golden.Case) -> None:
        files = case.paths(self.samples())
        reach = harness.case_reach(files, case.root(self.samples()))
        before = harness.tree_snapshot(reach, hashed=files)
        handles = harness.open_handles() if harness.handles_observable() else None
        with harness.writes_recorded() as writes:
            self._extract(files)
            for path in files:
                self._claim(self.the_adapter(), path)
        left = harness.handles_left(handles) if handles is not None else []
        problems = [f"wrote: {write}" for write in writes]
        problems += [f"left open: {handle}" for handle in left]
        changes = harness.snapshot_changes(before, harness.tree_snapshot(reach, hashed=files))
        problems += [f"changed under {reach}: {change}" for change in changes]
        assert not problems, "the adapter is not read-only:\n  " + "\n  ".join(problems)
        if handles is None:
            pytest.skip("open handles are not observable here: install psutil")

    def test_claims_own_files(self, case: golden.Case) -> None:
        adapter = self.the_adapter()
        claims = {path: self._claim(adapter, path) for path in case.paths(self.samples())}
        unclaimed = [str(path) for path, claim in claims.items() if not isinstance(claim, Claim)]
        assert not unclaimed, "not claimed: " + ", ".join(unclaimed)
        keys = {claim.group_key for claim in claims.values() if claim is not None}
        assert len(keys) == 1, f"the case's files fall into several groups: {sorted(keys)}"
        problems = checks.grouping_problems(
            {path: claim for path, claim in claims.items() if isinstance(claim, Claim)}
        )
        assert not problems, "\n".join(problems)

    def test_not_outbid(self, case: golden.Case) -> None:
        own_adapter = self.the_adapter()
        problems = []
        for path in case.paths(self.samples()):
            own = self._claim(own_adapter, path)
            for name, other in _installed().items():
                if name == own_adapter.info.name:
                    continue
                rival = self._claim(other, path)
                if rival is not None and (own is None or rival.confidence >= own.confidence):
                    problems.append(f"{name} claims {path} with confidence {rival.confidence}")
        assert not problems, "\n".join(problems)

    def test_leaves_others_alone(self, other: str, request: pytest.FixtureRequest) -> None:
        if other not in _installed():
            pytest.skip(other)
        roots = (self.corpus_root, plugin.corpus_root(request.config), self.samples_root)
        samples = checks.resolve_samples(_installed()[other], [r for r in roots if r])
        if not samples:
            pytest.skip(f"{other}'s samples not found; pass --acqharvest-corpus")
        adapter = self.the_adapter()
        stolen = [f"{path} ({claim})" for path in samples if (claim := self._claim(adapter, path))]
        assert not stolen, f"claims {other}'s samples: " + "; ".join(stolen)

    def test_zero_byte(self, tmp_path: Path) -> None:
        case = golden.load_cases(self.cases_folder())[0]
        empty = tmp_path / case.paths(self.samples())[0].name
        empty.write_bytes(b"")
        assert self._claim(self.the_adapter(), empty) is None, "claims an empty file"
        problem = self._refusal_problem((empty,))
        assert problem is None, problem

    def test_truncated(self, case: golden.Case, tmp_path: Path) -> None:
        data = case.paths(self.samples())[0].read_bytes()
        variants = ((label, data[:cut]) for label, cut in self.truncations(data).items())
        self._expect_refusals(case, variants, tmp_path, claim_allowed=True)

    def test_wrong_magic(self, case: golden.Case, tmp_path: Path) -> None:
        data = case.paths(self.samples())[0].read_bytes()
        self._expect_refusals(
            case, [("wrong magic", self.wrong_magic(data))], tmp_path, claim_allowed=False
        )

    def test_header_lies(
        self, case: golden.Case, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        data = case.paths(self.samples())[0].read_bytes()
        lies = list(self.header_lies(data))
        waiver = self.header_lies_waiver
        if waiver is not None and not waiver.strip():
            pytest.fail("header_lies_waiver is blank: say why your format has no header to lie in")
        if lies and waiver is not None:
            pytest.fail("header_lies() yields lies, so header_lies_waiver is stale: remove it")
        if not lies and waiver is not None:
            plugin.record_waiver(request.config, type(self).__name__, waiver)
            pytest.skip(f"header lies waived: {waiver}")
        if not lies:
            overridden = type(self).header_lies is not AdapterConformance.header_lies
            pytest.fail(
                f"{case.name}: header_lies() "
                + ("yields no lie for this sample" if overridden else "is not overridden")
                + ": yield copies of the sample whose lengths, counts or offsets point past "
                "its end (the kit cannot know where your format keeps them), or set "
                "header_lies_waiver = '<why your format has none>'"
            )
        self._expect_refusals(case, lies, tmp_path, claim_allowed=True)

    # ------------------------------------------------------------------ refusals

    def _expect_refusals(
        self,
        case: golden.Case,
        variants: Iterable[tuple[str, bytes]],
        tmp_path: Path,
        *,
        claim_allowed: bool,
    ) -> None:
        files = case.paths(self.samples())
        problems = []
        for index, (label, data) in enumerate(variants):
            variant = tmp_path / f"variant-{index}" / files[0].name
            variant.parent.mkdir()
            variant.write_bytes(data)
            try:
                claim = self._claim(self.the_adapter(), variant)
            except Exception as error:  # noqa: BLE001 - claim must never raise; report it
                problems.append(f"{label}: claim raised {type(error).__name__}: {error}")
                continue
            if claim is not None and not claim_allowed:
                problems.append(f"{label}: still claimed ({claim})")
            problem = self._refusal_problem((variant, *files[1:]))
            if problem is not None:
                problems.append(
                    f"{label} ({len(data)} of {files[0].stat().st_size} bytes): {problem}"
                )
        assert not problems, f"{files[0]}:\n  " + "\n  ".join(problems)

    def _refusal_problem(self, files: tuple[Path, ...]) -> str | None:
        """None when extract refuses ``files`` with an AdapterError naming the file."""
        try:
            output = self._extract(files)
        except AdapterError as error:
            if error.path != files[0] and str(files[0]) not in str(error):
                return f"AdapterError does not name the file: {error}"
            return None if error.reason.strip() else "AdapterError without a reason"
        except Exception as error:  # noqa: BLE001 - any other type is the finding
            return f"raised {type(error).__name__} instead of AdapterError: {error}"
        return f"no AdapterError; extracted format={output.format!r} {_brief(output.metadata)}"


def _brief(metadata: Any) -> str:
    text = repr(dict(metadata)) if hasattr(metadata, "items") else repr(metadata)
    return text if len(text) <= 200 else text[:200] + "..."
