"""The daemon's Prometheus metrics: counters the harvest increments where things happen.

A dedicated ``CollectorRegistry`` (not prometheus-client's global one), so two daemons in
one process (tests) never share a count and nothing a library registers leaks in. The
runtime owns the one ``Metrics`` of a daemon; the stages never see it. Gauges of state
(outbox depth, the oldest pending package, watchers) are set from the status snapshot
when ``/metrics`` is scraped, so they are as fresh as the scrape.

Names and labels (``folder`` is a watch folder as configured, ``sink`` the endpoint as
``acqharvest status`` names it: the URL without secrets, or the folder):

- ``acqharvest_files_seen_total{folder}``: file versions that started settling (new or
  changed files; one already harvested unchanged is not counted);
- ``acqharvest_files_settled_total{folder}``: files that held still and went on to be read;
- ``acqharvest_packages_built_total{sink}``, ``..._delivered_total{sink}``,
  ``..._rejected_total{sink}``: spooled into the outbox, confirmed, refused by the endpoint;
- ``acqharvest_adapter_failures_total{adapter}``: acquisitions an adapter failed on (``none``
  for files no adapter claimed);
- ``acqharvest_watch_restarts_total{folder}``: observers restarted by the health check;
- ``acqharvest_delivery_latency_seconds{sink}``: histogram, spooled into the outbox to
  confirmed by the endpoint, for packages spooled by the running daemon;
- ``acqharvest_outbox_packages{state}``: packages per outbox state;
- ``acqharvest_outbox_oldest_pending_age_seconds``: 0 when nothing is pending;
- ``acqharvest_watch_up{folder}``: 1 while the folder is watched as configured, else 0.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: from a local disk (under a second) to an endpoint down over a night
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: what no adapter claimed is failed under this adapter label
NO_ADAPTER = "none"


class Metrics:
    """Counters and gauges of one daemon, in a registry of its own."""

    def __init__(self, sink: str, folders: Iterable[str]) -> None:
        self._sink = sink
        self.registry = CollectorRegistry(auto_describe=True)
        #: gauges are set and rendered together: two scrapes at once do not interleave
        self._render = threading.Lock()

        def counter(name: str, documentation: str, label: str) -> Counter:
            return Counter(name, documentation, [label], registry=self.registry)

        self._seen = counter(
            "acqharvest_files_seen", "File versions that started settling.", "folder"
        )
        self._settled = counter(
            "acqharvest_files_settled", "Files that held still and went on to be read.", "folder"
        )
        self._built = counter(
            "acqharvest_packages_built", "Packages spooled into the outbox.", "sink"
        )
        self._delivered = counter(
            "acqharvest_packages_delivered", "Packages the endpoint confirmed.", "sink"
        )
        self._rejected = counter(
            "acqharvest_packages_rejected", "Packages the endpoint refused.", "sink"
        )
        self._adapter_failures = counter(
            "acqharvest_adapter_failures", "Acquisitions an adapter failed on.", "adapter"
        )
        self._restarts = counter(
            "acqharvest_watch_restarts", "Observers restarted by the health check.", "folder"
        )
        self._latency = Histogram(
            "acqharvest_delivery_latency_seconds",
            "Seconds from spooled into the outbox to confirmed by the endpoint.",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._outbox = Gauge(
            "acqharvest_outbox_packages",
            "Packages per outbox state.",
            ["state"],
            registry=self.registry,
        )
        self._oldest = Gauge(
            "acqharvest_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending package; 0 when none is pending.",
            registry=self.registry,
        )
        self._up = Gauge(
            "acqharvest_watch_up",
            "1 while the folder is watched as configured, else 0.",
            ["folder"],
            registry=self.registry,
        )
        # Every series that can be known now is shown from the start, at 0: a rate over a
        # series that appears only at its first event misses that event.
        for folder in folders:
            for by_folder in (self._seen, self._settled, self._restarts):
                by_folder.labels(folder)
        for by_sink in (self._built, self._delivered, self._rejected, self._latency):
            by_sink.labels(sink)

    def file_seen(self, folder: str) -> None:
        self._seen.labels(folder).inc()

    def file_settled(self, folder: str) -> None:
        self._settled.labels(folder).inc()

    def packages_built(self, count: int) -> None:
        self._built.labels(self._sink).inc(count)

    def package_delivered(self, latency_seconds: float | None) -> None:
        """A confirmed package; its latency when it was spooled by this daemon."""
        self._delivered.labels(self._sink).inc()
        if latency_seconds is not None:
            self._latency.labels(self._sink).observe(latency_seconds)

    def package_rejected(self) -> None:
        self._rejected.labels(self._sink).inc()

    def adapter_failed(self, adapter: str | None) -> None:
        self._adapter_failures.labels(adapter or NO_ADAPTER).inc()

    def watch_restarted(self, folder: str) -> None:
        self._restarts.labels(folder).inc()

    def exposition(
        self,
        outbox: Mapping[str, int],
        oldest_pending_age: float | None,
        watched: Mapping[str, bool],
    ) -> bytes:
        """The text format of every metric, the gauges set from this state first."""
        with self._render:
            for state, count in outbox.items():
                self._outbox.labels(state).set(count)
            self._oldest.set(oldest_pending_age or 0.0)
            for folder, up in watched.items():
                self._up.labels(folder).set(1 if up else 0)
            return generate_latest(self.registry)
