"""Mutated real DICOM and TIFF headers through the real adapters: AdapterError or success only.

Derandomized (the same examples on every run, so CI is reproducible); the ``long``
variant runs many more. A failure prints the seed file and the mutations that broke it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import (
    HUGE,
    SEEDS,
    flip,
    huge_number,
    memory_capped,
    placed,
    run_adapters,
    seed_bytes,
    tiff_ifd,
    time_bound,
    truncate,
)

_SEED_BYTES = seed_bytes()

Mutation = tuple[str, Callable[[bytes], bytes]]


def _mutations() -> st.SearchStrategy[Mutation]:
    position = st.integers(min_value=0, max_value=8192)
    return st.one_of(
        st.builds(
            lambda p, m: (f"flip({p}, {m:#x})", lambda d: flip(d, p, m)),
            position,
            st.integers(1, 255),
        ),
        st.builds(
            lambda n: (f"truncate({n})", lambda d: truncate(d, n)),
            st.integers(0, 20000),
        ),
        st.builds(
            lambda p, v, w, b: (
                f"huge_number({p}, {v:#x}, width={w}, big_endian={b})",
                lambda d: huge_number(d, p, v, w, b),
            ),
            position,
            st.sampled_from(HUGE),
            st.sampled_from((2, 4)),
            st.booleans(),
        ),
        st.builds(
            lambda o: (f"tiff_ifd(offset={o:#x})", lambda d: tiff_ifd(d, o, None)),
            st.one_of(st.sampled_from(HUGE), st.integers(0, 4096)),
        ),
        st.builds(
            lambda c: (f"tiff_ifd(count={c:#x})", lambda d: tiff_ifd(d, 0, c)),
            st.one_of(st.just(0xFFFF), st.integers(0, 512)),
        ),
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check(scratch: Path, seed: str, mutations: list[Mutation]) -> None:
    data = _SEED_BYTES[seed]
    for _, mutate in mutations:
        data = mutate(data)
    path = placed(scratch, seed)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    steps = " then ".join(label for label, _ in mutations)
    with time_bound(), memory_capped():
        try:
            run_adapters(path)
        except Exception as error:
            raise AssertionError(
                f"{seed} after {steps}: {type(error).__name__}: {error}"
            ) from error


FUZZ = settings(
    max_examples=100,
    derandomize=True,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


@FUZZ
@given(seed=st.sampled_from(SEEDS), mutations=st.lists(_mutations(), min_size=1, max_size=3))
def test_mutated_headers_fail_cleanly(scratch: Path, seed: str, mutations: list[Mutation]) -> None:
    check(scratch, seed, mutations)


@pytest.mark.long
@settings(FUZZ, max_examples=3000)
@given(seed=st.sampled_from(SEEDS), mutations=st.lists(_mutations(), min_size=1, max_size=5))
def test_mutated_headers_fail_cleanly_long(
    scratch: Path, seed: str, mutations: list[Mutation]
) -> None:
    check(scratch, seed, mutations)
