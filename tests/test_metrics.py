"""The daemon's metrics: a registry of its own, gauges set from the status at each scrape."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from acqharvest.metrics import Metrics

SINK = "https://ingest.example.org/packages"


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text, parsed by prometheus-client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_of_two_daemons_do_not_mix() -> None:
    first, second = Metrics(SINK, ["/data/a"]), Metrics(SINK, ["/data/a"])
    first.file_seen("/data/a")

    assert (
        samples_of(first.exposition({}, None, {}).decode())[
            "acqharvest_files_seen_total", (("folder", "/data/a"),)
        ]
        == 1
    )
    assert (
        samples_of(second.exposition({}, None, {}).decode())[
            "acqharvest_files_seen_total", (("folder", "/data/a"),)
        ]
        == 0
    )


def test_gauges_show_the_state_they_are_given() -> None:
    metrics = Metrics(SINK, ["/data/a", "/data/b"])

    text = metrics.exposition(
        {"pending": 4, "delivered": 9}, 321.5, {"/data/a": True, "/data/b": False}
    ).decode()

    samples = samples_of(text)
    assert samples["acqharvest_outbox_packages", (("state", "pending"),)] == 4
    assert samples["acqharvest_outbox_oldest_pending_age_seconds", ()] == 321.5
    assert samples["acqharvest_watch_up", (("folder", "/data/a"),)] == 1
    assert samples["acqharvest_watch_up", (("folder", "/data/b"),)] == 0
    # known before any event: a rate over a series that appears at its first event misses it
    assert samples["acqharvest_packages_rejected_total", (("sink", SINK),)] == 0
    assert samples["acqharvest_watch_restarts_total", (("folder", "/data/b"),)] == 0
