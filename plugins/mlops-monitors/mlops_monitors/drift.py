"""The ``drift`` monitor: reference profiles vs a sliding window of served inputs.

Per model version the window keeps the last ``window_rows`` values of every
profiled feature in fixed-size numpy ring buffers (float64 for numeric
features, int32 category codes for categorical ones): memory is
``window_rows x features x 8`` bytes however many rows flow through, and the
tests below run on raw values, so ties are compared as ties.

How a feature is judged (see ``docs/plugins/monitors.md`` for the reasoning):

* **numeric**: two-sample Kolmogorov-Smirnov test (tie-aware, on raw values
  against the reference's KLL sketch) for significance, and the normed
  Wasserstein distance (W1 / reference std) for the size of the change;
* **categorical**: chi-squared test of homogeneity for significance and the
  Jensen-Shannon distance for size.

A feature is flagged only when the change is *significant* (``p < alpha``,
default 0.01) **and** *large enough* (normed Wasserstein >= 0.1, or JS >= 0.1:
Evidently's defaults), over a window of at least ``min_rows`` rows. At small
samples the p-value is the binding constraint (a 150-row reference leaves the
Wasserstein estimate noisy), at large ones the effect size is (with 10,000 rows
any difference is "significant"). ``method="auto"`` therefore reports the KS
p-value (chi-squared for categorical) when the reference or the window has at
most ``small_sample_rows`` (1,000) rows and the effect size above, as Evidently
chooses; both numbers are in every report either way. PSI and JS over the
profile's tie-aware bins are reported too (and can be chosen as the effect
measure with ``numeric_method = "psi"`` or ``"js"``).

Every ``evaluate_every`` rows (default: ``window_rows / subwindows``) the window
is scored. When a feature newly crosses, the monitor fires
``mlops_drift_detected(report)`` and an ``mlops_alert``; scores are on
``/metrics`` as ``mlops_drift_score``. All of this runs on a background thread:
the event handler only enqueues.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs
import numpy as np

from mlops_core.entities import utcnow
from mlops_core.errors import NotFoundError
from mlops_core.plugins import hookimpl

from . import stats
from ._base import MonitorBase
from ._worker import BackgroundWorker
from .profile import (FeatureProfile, ReferenceProfile, build_profile, extract_features, load_profile, save_profile,
                      tensors_from_example)
from .prometheus import escape_label, fmt_float
from .sketches import KllSketch

__all__ = ["DriftConfig", "DriftMonitor", "DriftReport", "FeatureDrift", "FeatureWindow", "ModelWindow",
           "analyze", "evaluate", "report_key", "create_monitor"]

log = logging.getLogger("mlops_monitors.drift")

NUMERIC_METHODS = ("auto", "ks", "wasserstein", "psi", "js")
CATEGORICAL_METHODS = ("auto", "chi2", "js", "psi")
#: Files a bundle may carry with an example batch to profile at registration.
EXAMPLE_FILES = ("example.npz", "example.npy", "reference.npz", "reference.npy")


def report_key(model: str, version: int | str) -> str:
    return f"drift/{model}/{version}/latest.json"


@attrs.frozen
class DriftConfig:
    """Settings of ``[[monitors]] backend = "drift"``.

    Window: the last ``window_rows`` rows; scored every ``evaluate_every`` rows
    (0: every ``window_rows / subwindows``) once at least ``min_rows`` are in
    (the minimum window: fewer rows are never judged), at most once per
    ``evaluate_interval_s`` seconds (default 5; rows short of ``evaluate_every``
    are scored by a later tick once ``6 x evaluate_interval_s`` passed since the last
    evaluation, so a slow trickle of calls does not re-sort the window every 5 s).
    Decision: a feature drifts when its test's p-value is below ``alpha`` *and*
    its effect size reaches the threshold of the effect measure:
    ``wasserstein_threshold`` (normed Wasserstein, numeric), ``js_threshold``
    (Jensen-Shannon distance, categorical), or ``psi_threshold`` / ``js_threshold``
    when ``numeric_method``/``categorical_method`` pick ``psi``/``js``.
    ``method="auto"`` names the deciding method by sample size like Evidently
    (``ks``/``chi2`` up to ``small_sample_rows`` rows, ``wasserstein``/``js`` above).
    ``features``: only these (default all profiled); ``categorical``: treat
    these as categorical when capturing profiles.
    Reference at registration (``capture_on_register``): the bundle's example
    rows (``example.json``, saved from ``example=``) when there are at least
    ``min_reference_rows``, or an ``example.npz``/``.npy`` file in the bundle.
    """

    window_rows: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    subwindows: int = attrs.field(default=10, validator=attrs.validators.gt(0))
    evaluate_every: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: An evaluation sorts the window (about 3 ms per feature for 10,000 rows): at most one per 5 s
    #: keeps the monitor's CPU negligible however busy the server is; drift is never a 1-second event.
    evaluate_interval_s: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))
    min_rows: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    numeric_method: str = attrs.field(default="auto", validator=attrs.validators.in_(NUMERIC_METHODS))
    categorical_method: str = attrs.field(default="auto", validator=attrs.validators.in_(CATEGORICAL_METHODS))
    alpha: float = attrs.field(default=0.01, validator=[attrs.validators.gt(0), attrs.validators.lt(1)])
    wasserstein_threshold: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    js_threshold: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    psi_threshold: float = attrs.field(default=0.2, validator=attrs.validators.gt(0))
    small_sample_rows: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    features: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    categorical: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    n_bins: int = attrs.field(default=20, validator=attrs.validators.ge(2))
    max_categories: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    queue_size: int = 1000
    capture_on_register: bool = True
    #: A bundle's stored example rows become the reference profile only with at least this many rows.
    min_reference_rows: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    persist_interval_s: float = 30.0
    profile_retry_s: float = 60.0
    alert_severity: str = attrs.field(default="warning", validator=attrs.validators.in_(("info", "warning", "critical")))

    def effect_threshold(self, effect: str) -> float:
        return {"wasserstein": self.wasserstein_threshold, "js": self.js_threshold, "psi": self.psi_threshold}[effect]


# ------------------------------------------------------------------- reports
@attrs.frozen
class FeatureDrift:
    """One feature's verdict, with the evidence next to it.

    ``method`` is the deciding method and ``score``/``threshold`` its value and
    limit (a p-value against ``alpha`` for ``ks``/``chi2``, a distance otherwise).
    ``p_value`` (of the KS or chi-squared test) and ``effect`` (the value of the
    ``effect_name`` measure) are the two numbers the decision needs both of.
    ``status``: ``drift``, ``ok``, or ``insufficient`` (fewer than ``min_rows`` rows).
    """

    name: str
    kind: str
    method: str
    score: float
    threshold: float
    drifted: bool
    scores: Mapping[str, float] = attrs.field(factory=dict, converter=dict)
    rows: int = 0
    missing: int = 0
    counts: tuple[int, ...] = attrs.field(default=(), converter=tuple)  # current window, over the profile's bins
    p_value: float = 1.0
    effect: float = 0.0
    effect_name: str = ""
    status: str = "ok"


@attrs.frozen
class DriftReport:
    """The result of one evaluation of a window (or an offline batch) against a profile."""

    model: str
    version: int | None
    rows: int
    features: tuple[FeatureDrift, ...] = attrs.field(converter=tuple)
    created_at: str = attrs.field(factory=lambda: utcnow().isoformat())
    source: str = "serving"

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def has_drift(self) -> bool:
        return any(f.drifted for f in self.features)

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "mlops-monitors/drift-report/v1", "model": self.model, "version": self.version,
                "rows": self.rows, "created_at": self.created_at, "source": self.source,
                "drifted": self.drifted,
                "features": [attrs.asdict(f) | {"counts": list(f.counts)} for f in self.features]}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DriftReport":
        return cls(model=data["model"], version=data["version"], rows=data["rows"],
                   features=[FeatureDrift(**f) for f in data["features"]], created_at=data["created_at"],
                   source=data.get("source", ""))


# -------------------------------------------------------------------- windows
class FeatureWindow:
    """The last values of one feature in a fixed-size ring buffer (``capacity=None``: grows; offline use).

    Numeric values are kept as float64 (NaN: missing or not a number), categorical
    ones as int32 codes of the profile's categories. The reference side of the
    tests (the profile's KLL items and weights) is decoded once, here.
    """

    __slots__ = ("profile", "buf", "filled", "pos", "_parts", "ref_items", "ref_weights", "ref_n", "ref_values",
                 "ref_cdf")

    def __init__(self, profile: FeatureProfile, capacity: int | None) -> None:
        self.profile = profile
        dtype = np.float64 if profile.kind == "numeric" else np.int32
        self.buf = np.empty(capacity, dtype=dtype) if capacity else None
        self._parts: list[np.ndarray] = []
        self.filled = 0
        self.pos = 0
        self.ref_items = self.ref_weights = None
        self.ref_n = profile.count - profile.missing
        if profile.kind == "numeric" and profile.sketch:
            sketch = KllSketch.from_dict(profile.sketch)
            self.ref_items = np.concatenate(sketch.levels)
            self.ref_weights = np.concatenate([np.full(lvl.size, 2.0 ** i) for i, lvl in enumerate(sketch.levels)])
            self.ref_values, self.ref_cdf = stats.reference_cdf(self.ref_items, self.ref_weights)

    def _coded(self, values: np.ndarray) -> np.ndarray:
        if self.profile.kind == "numeric":
            try:
                return np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):  # a non-numeric value where numbers were profiled: missing
                return np.full(values.shape[0], np.nan)
        return self.profile.bin_index(values).astype(np.int32)

    def add(self, values: np.ndarray) -> None:
        v = self._coded(values).ravel()
        if self.buf is None:
            self._parts.append(v.copy())
            self.filled += v.size
            return
        cap = self.buf.size
        if v.size >= cap:
            self.buf[:] = v[-cap:]
            self.pos, self.filled = 0, cap
            return
        end = self.pos + v.size
        if end <= cap:
            self.buf[self.pos:end] = v
        else:
            split = cap - self.pos
            self.buf[self.pos:] = v[:split]
            self.buf[:end - cap] = v[split:]
        self.pos = end % cap
        self.filled = min(cap, self.filled + v.size)

    def values(self) -> np.ndarray:
        """The window's values (order irrelevant: every statistic here is order-free)."""
        if self.buf is None:
            return np.concatenate(self._parts) if self._parts else np.empty(0)
        return self.buf[:self.filled]

    @property
    def nbytes(self) -> int:
        return int(self.buf.nbytes) if self.buf is not None else sum(p.nbytes for p in self._parts)


class ModelWindow:
    """The sliding window of one model version: a ring buffer per profiled feature.

    ``window_rows=None`` keeps everything (offline analysis of a whole batch).
    """

    def __init__(self, profile: ReferenceProfile, *, window_rows: int | None = 10_000, subwindows: int = 10,
                 features: Iterable[str] = ()) -> None:
        wanted = set(features)
        self.profile = profile
        self.capacity = window_rows
        #: Rows between two scheduled evaluations (the old sub-window size).
        self.slot_rows = max(1, window_rows // subwindows) if window_rows else None
        self.features = {n: FeatureWindow(fp, window_rows) for n, fp in profile.features.items()
                         if not wanted or n in wanted}
        self.since_eval = 0
        self.total_rows = 0

    def add(self, features: Mapping[str, np.ndarray]) -> None:
        present = [(fw, features[n]) for n, fw in self.features.items() if n in features]
        if not present:
            return
        n = max(v.shape[0] for _, v in present)
        for fw, values in present:  # a feature absent from a request simply gets no values
            fw.add(values)
        self.since_eval += n
        self.total_rows += n

    @property
    def window_rows(self) -> int:
        return max((fw.filled for fw in self.features.values()), default=0)

    @property
    def nbytes(self) -> int:
        return int(sum(fw.nbytes for fw in self.features.values()))


def _numeric_verdict(fw: FeatureWindow, config: DriftConfig, values: np.ndarray) -> dict[str, Any]:
    fp = fw.profile
    nan = np.isnan(values)
    missing = int(nan.sum())
    v = values[~nan]
    counts = np.bincount(np.searchsorted(np.asarray(fp.edges, dtype=np.float64), v, side="right"),
                         minlength=fp.n_bins) if fp.n_bins else np.zeros(0, dtype=np.int64)
    ref = np.asarray(fp.counts, dtype=np.float64)
    scores = {"psi": stats.psi(ref, counts), "js": stats.js_distance(ref, counts)}
    if fw.ref_items is not None and v.size:
        d, p, w = stats.ks_and_wasserstein(fw.ref_values, fw.ref_cdf, fw.ref_n, v)
    else:
        d, p, w = 0.0, 1.0, 0.0
    std = fp.std or 0.0
    # A constant reference has no scale: distances stay in the feature's own unit then.
    scores.update({"ks": d, "ks_pvalue": p, "wasserstein": w, "wasserstein_normed": w / std if std > 0 else w})
    method = config.numeric_method
    effect_name = method if method in ("psi", "js") else "wasserstein"
    effect = scores["wasserstein_normed"] if effect_name == "wasserstein" else scores[effect_name]
    if method == "auto":
        method = "ks" if min(fw.ref_n, v.size) <= config.small_sample_rows else "wasserstein"
    return {"rows": int(v.size), "missing": missing, "counts": counts, "scores": scores, "p_value": p,
            "effect": effect, "effect_name": effect_name, "method": method}


def _categorical_verdict(fw: FeatureWindow, config: DriftConfig, codes: np.ndarray) -> dict[str, Any]:
    fp = fw.profile
    counts = np.bincount(codes, minlength=fp.n_bins)
    ref = np.asarray(fp.counts, dtype=np.float64)
    stat, p, cramers_v = stats.chi2_test(ref, counts)
    scores = {"psi": stats.psi(ref, counts), "js": stats.js_distance(ref, counts), "chi2": stat,
              "chi2_pvalue": p, "cramers_v": cramers_v}
    method = config.categorical_method
    effect_name = "psi" if method == "psi" else "js"
    if method == "auto":
        method = "chi2" if min(fp.count, codes.size) <= config.small_sample_rows else "js"
    return {"rows": int(codes.size), "missing": 0, "counts": counts, "scores": scores, "p_value": p,
            "effect": scores[effect_name], "effect_name": effect_name, "method": method}


def evaluate(window: ModelWindow, config: DriftConfig, source: str = "serving") -> DriftReport:
    """Judge every feature of ``window`` against its reference profile (see the module docstring)."""
    out = []
    for name, fw in window.features.items():
        values = fw.values()
        verdict = (_numeric_verdict if fw.profile.kind == "numeric" else _categorical_verdict)(fw, config, values)
        threshold = config.effect_threshold(verdict["effect_name"])
        enough = verdict["rows"] >= config.min_rows
        drifted = enough and verdict["p_value"] < config.alpha and verdict["effect"] >= threshold
        method = verdict["method"]
        if method in ("ks", "chi2"):
            score, limit = verdict["p_value"], config.alpha
        else:
            score, limit = verdict["effect"], threshold
        out.append(FeatureDrift(name=name, kind=fw.profile.kind, method=method, score=float(score),
                                threshold=float(limit), drifted=bool(drifted),
                                scores={k: float(v) for k, v in verdict["scores"].items()}, rows=verdict["rows"],
                                missing=verdict["missing"], counts=verdict["counts"].tolist(),
                                p_value=float(verdict["p_value"]), effect=float(verdict["effect"]),
                                effect_name=verdict["effect_name"],
                                status="drift" if drifted else "ok" if enough else "insufficient"))
    return DriftReport(model=window.profile.model, version=window.profile.version, rows=window.window_rows,
                       features=out, source=source)


def analyze(profile: ReferenceProfile, batches: Iterable[Mapping[str, Any]], config: DriftConfig | None = None,
            source: str = "offline") -> DriftReport:
    """Score whole batches of inputs (tensor dicts, or raw examples) against ``profile`` (offline, replay)."""
    config = config or DriftConfig()
    window = ModelWindow(profile, window_rows=None, features=config.features)
    for batch in batches:
        tensors = batch if isinstance(batch, Mapping) else tensors_from_example(batch)
        window.add(extract_features(tensors))
    return evaluate(window, config, source=source)


# -------------------------------------------------------------------- monitor
class DriftMonitor(MonitorBase):
    """Scores served inputs against each version's reference profile, off the serving thread."""

    kind = "drift"
    #: Evaluate intervals that rows short of ``evaluate_every`` wait before a tick scores them anyway.
    LEFTOVER_WAIT = 6

    def __init__(self, config: DriftConfig | None = None, context: Any = None, storage: Any = None) -> None:
        super().__init__(context, storage)
        self.config = config or DriftConfig()
        self._lock = threading.Lock()
        self._profiles: dict[tuple[str, int | None], ReferenceProfile | None] = {}
        self._profile_misses: dict[tuple[str, int | None], float] = {}
        self._windows: dict[tuple[str, int | None], ModelWindow] = {}
        self._latest: dict[tuple[str, int | None], DriftReport] = {}
        self._alerted: dict[tuple[str, int | None], set[str]] = {}
        self._dirty: set[tuple[str, int | None]] = set()
        self._pending_examples: dict[str, Path] = {}
        self._last_persist = time.monotonic()
        self._last_eval: dict[tuple[str, int | None], float] = {}
        self.unprofiled_events = 0
        self.worker = BackgroundWorker("drift", self._process, maxsize=self.config.queue_size,
                                       tick=self._tick, tick_interval_s=1.0)

    # ---------------------------------------------------------- event hooks
    @hookimpl
    def mlops_predictions_batch(self, batch: Any) -> None:
        self.worker.submit(("batch", batch))  # one queue item per batch, stacked on the worker

    @hookimpl
    def mlops_bundle_saved(self, path: Any, manifest: dict[str, Any]) -> None:
        if self.config.capture_on_register:
            self.worker.submit(("bundle", (Path(path), manifest)))

    @hookimpl
    def mlops_version_registered(self, version: Any) -> None:
        if self.config.capture_on_register:
            self.worker.submit(("registered", version))

    @hookimpl
    def mlops_collect_metrics(self) -> str:
        with self._lock:
            reports = sorted(self._latest.values(), key=lambda r: (r.model, str(r.version)))
        if not reports:
            return ""
        out = ["# HELP mlops_drift_score Drift score of a feature's serving window against its reference "
               "profile, per method (ks_pvalue and chi2_pvalue are p-values).\n# TYPE mlops_drift_score gauge\n"]
        for r in reports:
            for f in r.features:
                for method, value in sorted(f.scores.items()):
                    out.append(f'mlops_drift_score{{model="{escape_label(r.model)}",version="{r.version}",'
                               f'feature="{escape_label(f.name)}",method="{method}"}} {fmt_float(value)}\n')
        out.append("# HELP mlops_drift_detected 1 when the feature's change is significant (p < alpha) and large enough.\n"
                   "# TYPE mlops_drift_detected gauge\n")
        for r in reports:
            for f in r.features:
                out.append(f'mlops_drift_detected{{model="{escape_label(r.model)}",version="{r.version}",'
                           f'feature="{escape_label(f.name)}"}} {int(f.drifted)}\n')
        out.append("# HELP mlops_drift_window_rows Rows in the sliding window last scored.\n"
                   "# TYPE mlops_drift_window_rows gauge\n")
        for r in reports:
            out.append(f'mlops_drift_window_rows{{model="{escape_label(r.model)}",version="{r.version}"}} {r.rows}\n')
        return "".join(out)

    # ------------------------------------------------------------- public API
    def set_profile(self, profile: ReferenceProfile, *, save: bool = False) -> None:
        """Use ``profile`` for its model version (and store it with ``save=True``)."""
        if save:
            save_profile(self.storage, profile)
        with self._lock:
            key = (profile.model, profile.version)
            self._profiles[key] = profile
            self._windows.pop(key, None)

    def capture_profile(self, model: str, version: int, data: Any, *, save: bool = True) -> ReferenceProfile:
        """Profile training data (an array, DataFrame, dict of arrays) for a version and use it."""
        tensors = data if isinstance(data, Mapping) else tensors_from_example(data)
        profile = build_profile(lambda: [tensors], model=model, version=version, n_bins=self.config.n_bins,
                                max_categories=self.config.max_categories, categorical=self.config.categorical)
        self.set_profile(profile, save=save)
        return profile

    def latest_report(self, model: str, version: int | None) -> DriftReport | None:
        with self._lock:
            return self._latest.get((model, version))

    def evaluate_now(self, model: str, version: int | None) -> DriftReport | None:
        """Score the current window now (after processing what is queued), publish and return the report."""
        self.worker.flush()
        window = self._windows.get((model, version))
        if window is None:
            return None
        report = evaluate(window, self.config)
        window.since_eval = 0
        self._publish((model, version), report)
        return report

    def window(self, model: str, version: int | None) -> ModelWindow | None:
        return self._windows.get((model, version))

    # ------------------------------------------------------ background work
    def _process(self, items: list[tuple[str, Any]]) -> None:
        for kind, payload in items:
            if kind == "batch":
                self._observe(payload)
            elif kind == "bundle":
                self._remember_example(*payload)
            elif kind == "registered":
                self._capture_registered(payload)

    def _profile_for(self, key: tuple[str, int | None]) -> ReferenceProfile | None:
        if key in self._profiles and self._profiles[key] is not None:
            return self._profiles[key]
        missed = self._profile_misses.get(key)
        if key[1] is None or (missed is not None and time.monotonic() - missed < self.config.profile_retry_s):
            return None
        try:
            profile = load_profile(self.storage, key[0], key[1])
        except NotFoundError:
            self._profile_misses[key] = time.monotonic()
            log.info("no reference profile for models:/%s/%s yet; drift is not scored", *key)
            return None
        with self._lock:
            self._profiles[key] = profile
        return profile

    def _observe(self, batch: Any) -> None:
        key = (batch.model, batch.version)
        profile = self._profile_for(key)
        if profile is None:
            self.unprofiled_events += batch.count
            return
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = ModelWindow(profile, window_rows=self.config.window_rows,
                                                      subwindows=self.config.subwindows,
                                                      features=self.config.features)
        features = _batch_features(batch)
        if not features:
            return
        window.add(features)
        every = self.config.evaluate_every or window.slot_rows or self.config.window_rows
        if window.since_eval >= every:
            self._maybe_evaluate(key, window)

    def _maybe_evaluate(self, key: tuple[str, int | None], window: ModelWindow, wait_s: float | None = None) -> None:
        now = time.monotonic()
        if window.window_rows < self.config.min_rows:
            return
        if now - self._last_eval.get(key, -math.inf) < (self.config.evaluate_interval_s if wait_s is None else wait_s):
            return
        self._last_eval[key] = now
        window.since_eval = 0
        self._publish(key, evaluate(window, self.config))

    def _publish(self, key: tuple[str, int | None], report: DriftReport) -> None:
        with self._lock:
            self._latest[key] = report
            self._dirty.add(key)
        drifted = set(report.drifted)
        new = drifted - self._alerted.get(key, set())
        self._alerted[key] = drifted  # a feature that recovers and drifts again alerts again
        if new and self.hooks is not None:
            self.hooks.drift_detected(report)
            worst = max((f for f in report.features if f.drifted), key=lambda f: f.effect)
            self.hooks.alert({
                "severity": self.config.alert_severity,
                "title": f"drift on {len(drifted)} feature(s) of models:/{report.model}/{report.version}: "
                         + ", ".join(sorted(drifted)[:5]),
                "model": report.model, "version": report.version,
                "details": {"features": sorted(drifted), "new": sorted(new), "window_rows": report.rows,
                            "worst": {"feature": worst.name, "method": worst.method, "score": worst.score,
                                      "threshold": worst.threshold, "p_value": worst.p_value,
                                      worst.effect_name: worst.effect}},
            })

    def _tick(self) -> None:
        # Rows short of a scheduled evaluation are scored once they have waited LEFTOVER_WAIT evaluate
        # intervals: an evaluation sorts the whole window (about 10 ms for 10,000 rows x 4 features on a
        # busy machine), and scoring a slow trickle of rows every interval was most of the monitor's CPU
        # on a lightly loaded server.
        wait = self.config.evaluate_interval_s * self.LEFTOVER_WAIT
        for key, window in list(self._windows.items()):
            if window.since_eval > 0:
                self._maybe_evaluate(key, window, wait)
        if time.monotonic() - self._last_persist >= self.config.persist_interval_s:
            self.persist()

    def persist(self) -> None:
        """Write the latest report of every changed version to ``drift/<model>/<version>/latest.json``."""
        self._last_persist = time.monotonic()
        with self._lock:
            dirty = [(k, self._latest[k]) for k in self._dirty]
            self._dirty.clear()
        for (model, version), report in dirty:
            self.storage.write_bytes(report_key(model, version), report.to_json())

    # ------------------------------------------------ profiles at registration
    def _remember_example(self, path: Path, manifest: Mapping[str, Any]) -> None:
        from mlops_core.bundle import canonical_json
        import hashlib

        example = next((path / n for n in EXAMPLE_FILES if (path / n).is_file()), None)
        if example is not None:
            digest = "sha256:" + hashlib.sha256(canonical_json(dict(manifest))).hexdigest()
            self._pending_examples[digest] = example

    def _capture_registered(self, version: Any) -> None:
        example = self._pending_examples.pop(version.artifact.digest, None)
        tmp = None
        if example is None:
            try:
                from mlops_core.artifacts import pull_bundle
            except ImportError:  # pragma: no cover - older core
                return
            tmp = tempfile.TemporaryDirectory(prefix="mlops-drift-")
            bundle = pull_bundle(self.storage, version.artifact, Path(tmp.name) / "bundle")
            example = next((bundle / n for n in EXAMPLE_FILES if (bundle / n).is_file()), None)
        try:
            if example is None:
                data = self._stored_example(bundle) if tmp is not None else None
                if data is None:
                    return
                source = "its stored example rows"
            else:
                data = np.load(example, allow_pickle=False)
                if isinstance(data, np.lib.npyio.NpzFile):
                    with data:
                        data = {k: data[k] for k in data.files}
                source = example.name
            self.capture_profile(version.model, version.version, data, save=True)
            log.info("captured a reference profile for %s from %s", version.uri, source)
        finally:
            if tmp is not None:
                tmp.cleanup()

    def _stored_example(self, bundle: Path) -> dict[str, Any] | None:
        """The bundle's example rows (``example.json``, a V2 body) as tensors, if there are enough to profile."""
        from mlops_core.bundle import verify_bundle, read_example

        body = read_example(verify_bundle(bundle))
        if not body:
            return None
        tensors = {}
        for t in body["inputs"]:
            dtype = object if t["datatype"] == "BYTES" else None
            tensors[t["name"]] = np.asarray(t["data"], dtype=dtype).reshape(t["shape"])
        rows = min((len(v) for v in tensors.values()), default=0)
        if rows < self.config.min_reference_rows:
            log.info("not profiling %s: its example has %d rows, fewer than min_reference_rows=%d",
                     bundle, rows, self.config.min_reference_rows)
            return None
        return tensors

    def close(self) -> None:
        super().close()
        try:
            self.persist()
        except Exception:
            log.exception("could not persist the last drift reports")


def _batch_features(batch: Any) -> dict[str, np.ndarray]:
    """Features of a batch's successful calls: tensors stacked row-wise first, then split into features once."""
    ok = [i for i, e in enumerate(batch.errors) if e is None] if any(e is not None for e in batch.errors) \
        else range(batch.count)
    out: dict[str, np.ndarray] = {}
    for name, tensors in batch.inputs.items():
        parts = [np.asarray(tensors[i]) for i in ok if tensors[i] is not None]
        if not parts:
            continue
        parts = [p if p.ndim else p.reshape(1) for p in parts]
        try:
            stacked = parts[0] if len(parts) == 1 else np.concatenate(parts)
        except ValueError:  # trailing shapes differ between calls: split each call, then join per feature
            merged: dict[str, list[np.ndarray]] = {}
            for part in parts:
                for fname, values in extract_features({name: part}).items():
                    merged.setdefault(fname, []).append(values)
            out.update({f: np.concatenate(v) for f, v in merged.items()})
            continue
        out.update(extract_features({name: stacked}))
    return out


def create_monitor(config: DriftConfig, context: Any) -> DriftMonitor:
    return DriftMonitor(config, context)
