"""The server's own Prometheus counters (text format 0.0.4), kept in plain dicts on the event loop."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Iterable

__all__ = ["ServerMetrics"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items()) + "}"


class ServerMetrics:
    """Counters updated on the event loop thread only, so no locks."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}  # (model, route, status) -> count
        self.durations: dict[str, list[int]] = {}  # model -> bucket counts (+Inf last)
        self.duration_sum: dict[str, float] = {}
        self.rows: dict[str, int] = {}
        self.shed = 0
        self.timeouts = 0
        self.too_large = 0
        self.hook_events = 0
        self.hook_events_dropped = 0

    def observe(self, model: str, route: str, status: int, seconds: float, rows: int) -> None:
        key = (model, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        if status == 200:
            buckets = self.durations.get(model)
            if buckets is None:
                buckets = self.durations[model] = [0] * (len(BUCKETS) + 1)
                self.duration_sum[model] = 0.0
            buckets[bisect_left(BUCKETS, seconds)] += 1
            self.duration_sum[model] += seconds
            self.rows[model] = self.rows.get(model, 0) + rows

    def render(self, models: Iterable[Any], queue_depth: int, batchers: Iterable[Any]) -> str:
        out = [
            "# HELP mlops_server_requests_total Prediction requests answered, by model, route and HTTP status.",
            "# TYPE mlops_server_requests_total counter",
        ]
        for (model, route, status), n in sorted(self.requests.items()):
            out.append(f"mlops_server_requests_total{_labels(model=model, route=route, code=status)} {n}")
        out += ["# HELP mlops_server_request_duration_seconds Time to answer a successful prediction request.",
                "# TYPE mlops_server_request_duration_seconds histogram"]
        for model, buckets in sorted(self.durations.items()):
            acc = 0
            for le, n in zip(BUCKETS, buckets):
                acc += n
                out.append(f"mlops_server_request_duration_seconds_bucket{_labels(model=model, le=le)} {acc}")
            acc += buckets[-1]
            out.append(f'mlops_server_request_duration_seconds_bucket{_labels(model=model, le="+Inf")} {acc}')
            out.append(f"mlops_server_request_duration_seconds_sum{_labels(model=model)} {self.duration_sum[model]:.6f}")
            out.append(f"mlops_server_request_duration_seconds_count{_labels(model=model)} {acc}")
        out += ["# HELP mlops_server_predicted_rows_total Rows predicted (first dimension of the inputs).",
                "# TYPE mlops_server_predicted_rows_total counter"]
        for model, n in sorted(self.rows.items()):
            out.append(f"mlops_server_predicted_rows_total{_labels(model=model)} {n}")
        out += ["# HELP mlops_server_model_ready 1 when the model is loaded and warmed up, 0 otherwise.",
                "# TYPE mlops_server_model_ready gauge"]
        for m in models:
            out.append(f"mlops_server_model_ready{_labels(model=m.name, version=m.version or '')} {int(m.ready)}")
        out += ["# HELP mlops_server_batches_total Adaptive batches predicted.",
                "# TYPE mlops_server_batches_total counter"]
        batchers = list(batchers)
        for b in batchers:
            out.append(f"mlops_server_batches_total{_labels(model=b.model.name)} {b.batches}")
        out += ["# HELP mlops_server_batched_requests_total Requests answered through adaptive batches.",
                "# TYPE mlops_server_batched_requests_total counter"]
        for b in batchers:
            out.append(f"mlops_server_batched_requests_total{_labels(model=b.model.name)} {b.batched_requests}")
        for name, help_, value, kind in (
            ("queue_depth", "Prediction requests admitted and not yet answered.", queue_depth, "gauge"),
            ("shed_requests_total", "Requests refused with 503 because the queue was full.", self.shed, "counter"),
            ("timeouts_total", "Requests answered 504 because the prediction took too long.", self.timeouts, "counter"),
            ("too_large_requests_total", "Requests refused with 413 (body over the limit).", self.too_large, "counter"),
            ("hook_events_total", "Prediction events handed to mlops_predictions_served listeners.",
             self.hook_events, "counter"),
            ("hook_events_dropped_total", "Prediction events dropped because listeners fell behind.",
             self.hook_events_dropped, "counter"),
        ):
            out += [f"# HELP mlops_server_{name} {help_}", f"# TYPE mlops_server_{name} {kind}",
                    f"mlops_server_{name} {value}"]
        return "\n".join(out) + "\n"
