"""Hub stats for operators: a log line every N seconds, and Prometheus text.

:func:`log_every` logs every hub's :meth:`~aiows.Hub.stats` on an interval
(``python -m aiows serve --stats-interval S``) and :func:`metrics_hook` serves them in
the Prometheus text format on ``GET /metrics`` (``--metrics``; needs the
``prometheus-client`` package, the ``aiows[metrics]`` extra). This module sits above
the hub and the server: it imports them, they never import it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from .http import Request, Response
from .hub import Hub
from .hubstats import HubStats
from .server import ProcessRequest, answer_of

__all__ = ["log_every", "metrics_hook", "render_metrics"]

log = logging.getLogger(__name__)


def _hubs(hubs: Iterable[Hub] | None) -> list[Hub]:
    return Hub.instances() if hubs is None else list(hubs)


async def log_every(
    interval: float, hubs: Iterable[Hub] | None = None, *, worker: int | None = None
) -> None:
    """Log the stats of ``hubs`` (default: every live hub) every ``interval`` seconds.

    Each line starts ``stats worker=N`` when ``worker`` is given (one of several
    processes), so that lines from every worker can be told apart. Runs until cancelled.
    """
    prefix = "stats" if worker is None else f"stats worker={worker}"
    while True:
        await asyncio.sleep(interval)
        for hub in _hubs(hubs):
            log.info("%s %s", prefix, hub.stats().format())


# ------------------------------------------------------------------------- Prometheus

_COUNTERS = {
    "broadcasts": "Broadcasts made",
    "messages_sent": "Messages written to members (one per member reached)",
    "bytes_sent": "Frame bytes written to members",
    "frames_encoded": "Frames encoded (once per shared format, or per member)",
    "messages_dropped": "Messages the drop policy skipped for slow members",
    "closed_slow": "Connections closed for being slow consumers",
}
_GAUGES = {
    "connections": "Connections in the hub",
    "groups": "Groups with at least one member",
}


def render_metrics(
    hubs: Iterable[Hub] | None = None, *, worker: int | None = None
) -> tuple[bytes, str]:
    """Return the stats of ``hubs`` (default: every live hub) as Prometheus text.

    Every series has a ``hub`` label (the hub's name) and, when ``worker`` is given
    (one of several processes), a ``worker`` label: sum over workers with
    ``sum without(worker) (...)``. Returns ``(body, content_type)``. Raises
    ``ImportError`` when ``prometheus-client`` is not installed.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    snapshots = [hub.stats() for hub in _hubs(hubs)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshots, worker))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, snapshots: list[HubStats], worker: int | None) -> None:
        self._snapshots = snapshots
        # Labels every series carries besides its own: the hub, and the worker if any.
        self._names = ["hub"] if worker is None else ["hub", "worker"]
        self._extra = [] if worker is None else [str(worker)]

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        names, extra = self._names, self._extra
        for key, text in _COUNTERS.items():
            counter = CounterMetricFamily(f"aiows_hub_{key}", text, labels=names)
            for snap in self._snapshots:
                counter.add_metric([snap.name, *extra], getattr(snap, key))
            yield counter
        for key, text in _GAUGES.items():
            gauge = GaugeMetricFamily(f"aiows_hub_{key}", text, labels=names)
            for snap in self._snapshots:
                gauge.add_metric([snap.name, *extra], getattr(snap, key))
            yield gauge
        latency = GaugeMetricFamily(
            "aiows_hub_ping_latency_seconds",
            "Ping round trip of the hub's members, by quantile",
            labels=[*names, "quantile"],
        )
        for snap in self._snapshots:
            for quantile, value in (
                ("0.5", snap.latency_p50),
                ("0.9", snap.latency_p90),
                ("0.99", snap.latency_p99),
            ):
                if value is not None:
                    latency.add_metric([snap.name, *extra, quantile], value)
        yield latency


def metrics_hook(
    inner: ProcessRequest | None = None,
    path: str = "/metrics",
    hubs: Iterable[Hub] | None = None,
    *,
    worker: int | None = None,
) -> ProcessRequest:
    """Return a ``process_request`` hook that answers ``GET path`` with Prometheus text.

    Other requests go to ``inner`` (if any). Use it as
    ``serve(handler, ..., process_request=metrics_hook())``; ``worker`` labels every
    series (see :func:`render_metrics`). Raises ``ImportError`` at once when
    ``prometheus-client`` is not installed.
    """
    import prometheus_client  # noqa: F401  (fail now, not on the first scrape)

    chosen = None if hubs is None else list(hubs)

    async def hook(request: Request) -> Response | None:
        if not request.is_upgrade and request.path == path and request.method in ("GET", "HEAD"):
            body, content_type = render_metrics(chosen, worker=worker)
            return Response(200, body, content_type=content_type)
        return await answer_of(inner, request)

    return hook
