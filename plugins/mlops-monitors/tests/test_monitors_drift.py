"""The drift monitor: fires on the shifted features only, constant memory, alerts, profiles."""

from __future__ import annotations

import gc
import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops_core.entities import ArtifactRef, ModelVersion
from mlops_core.plugins import PluginManager
from monitors_fixtures import DirStore, Recorder, context, event

from mlops_monitors.drift import DriftConfig, DriftMonitor, ModelWindow, analyze, evaluate, report_key
from mlops_monitors.profile import ReferenceProfile, build_profile, load_profile, read_data
from mlops_monitors.sketches import CappedCounter, KllSketch
from mlops_monitors import stats

# ------------------------------------------------------------ synthetic data
NUMERIC_FAMILIES = ("normal", "uniform", "lognormal", "exponential", "gamma")


def _numeric(rng, family, params, n):
    loc, scale, shape = params
    if family == "normal":
        return rng.normal(loc, scale, n)
    if family == "uniform":
        return rng.uniform(loc, loc + 4 * scale, n)
    if family == "lognormal":
        return np.exp(rng.normal(0, shape, n)) * scale + loc
    if family == "exponential":
        return rng.exponential(scale, n) + loc
    return rng.gamma(1 + 4 * shape, scale, n) + loc


feature_spec = st.one_of(
    st.tuples(st.just("numeric"), st.sampled_from(NUMERIC_FAMILIES),
              st.tuples(st.floats(-100, 100), st.floats(0.1, 50), st.floats(0.2, 1.0))),
    st.tuples(st.just("categorical"), st.integers(2, 8), st.integers(0, 2**31 - 1)),
)


def _draw(rng, spec, n, shifted):
    kind, a, b = spec
    if kind == "numeric":
        x = _numeric(rng, a, b, n)
        # a known shift: one reference standard deviation (a real incident, not noise)
        return x + np.std(_numeric(np.random.default_rng(7), a, b, 20_000)) if shifted else x
    k, seed = a, b
    probs = np.random.default_rng(seed).dirichlet(np.ones(k)) * 0.6 + 0.4 / k
    probs = np.sort(probs)[::-1]
    if shifted:
        probs = probs[::-1]  # most frequent category becomes the rarest
        if np.allclose(probs, probs[::-1]):  # pragma: no cover - uniform already; make it skewed
            probs = np.r_[0.7, np.full(k - 1, 0.3 / (k - 1))]
    cats = np.array([f"cat{i}" for i in range(k)])
    return rng.choice(cats, size=n, p=probs / probs.sum())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(feature_spec, min_size=2, max_size=6),
       shifted_mask=st.lists(st.booleans(), min_size=6, max_size=6),
       seed=st.integers(0, 2**32 - 1))
def test_drift_fires_on_the_shifted_features_and_only_those(specs, shifted_mask, seed):
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(len(specs))]
    shifted = {n for n, s in zip(names, shifted_mask) if s and not _is_flat_categorical(specs[names.index(n)])}
    reference = {n: _draw(rng, s, 20_000, False) for n, s in zip(names, specs)}
    current = {n: _draw(rng, s, 5_000, n in shifted) for n, s in zip(names, specs)}
    profile = build_profile(lambda: [reference], model="m", version=1)
    for method in ("psi", "ks", "js"):
        report = analyze(profile, [current], DriftConfig(numeric_method=method))
        assert set(report.drifted) == shifted, (method, [(f.name, f.method, f.score) for f in report.features])


def _is_flat_categorical(spec):
    if spec[0] != "categorical":
        return False
    probs = np.random.default_rng(spec[2]).dirichlet(np.ones(spec[1])) * 0.6 + 0.4 / spec[1]
    probs = np.sort(probs)[::-1]
    return float(probs[0] - probs[-1]) < 0.15  # reversing a near-uniform table is no real shift


def test_monitor_alerts_once_per_new_drift_and_exports_scores(tmp_path):
    pm = PluginManager(autoload=False)
    recorder = Recorder()
    pm.register(recorder, name="recorder")
    drift = DriftMonitor(DriftConfig(evaluate_interval_s=0, window_rows=2000, subwindows=4, min_rows=500), context(pm, "drift"),
                         DirStore(tmp_path))
    pm.register(drift, name="monitor:drift:0")
    rng = np.random.default_rng(3)
    drift.capture_profile("credit", 2, rng.normal(size=(10_000, 3)), save=False)
    for _ in range(10):  # no drift yet
        pm.hooks.predictions_served(event("credit", 2, {"input-0": rng.normal(size=(200, 3))}))
    drift.flush()
    assert drift.latest_report("credit", 2).drifted == []
    assert recorder.alerts == []
    for _ in range(30):
        x = rng.normal(size=(200, 3))
        x[:, 2] = x[:, 2] * 3 + 2
        pm.hooks.predictions_served(event("credit", 2, {"input-0": x}))
    drift.flush()
    report = drift.latest_report("credit", 2)
    assert report.drifted == ["input-0[2]"]
    assert len(recorder.reports) == 1 and len(recorder.alerts) == 1  # edge-triggered, not once per evaluation
    alert = recorder.alerts[0]
    assert alert["severity"] == "warning" and alert["model"] == "credit" and alert["version"] == 2
    assert alert["details"]["features"] == ["input-0[2]"]
    text = pm.hooks.collect_metrics()
    assert 'mlops_drift_detected{model="credit",version="2",feature="input-0[2]"} 1' in text
    assert 'mlops_drift_detected{model="credit",version="2",feature="input-0[0]"} 0' in text
    assert 'mlops_drift_score{model="credit",version="2",feature="input-0[2]",method="psi"}' in text
    drift.close()


def test_sketch_memory_stays_flat_while_ten_million_rows_stream_through(tmp_path):
    pm = PluginManager(autoload=False)
    # scored once, at 500,000 rows (before the baseline sample at 1M rows), then at most hourly: an
    # evaluation sorts the 50,000-row window, and one running on the worker's tick while memory is
    # sampled would count its temporaries as growth
    drift = DriftMonitor(DriftConfig(evaluate_interval_s=3600, window_rows=50_000, evaluate_every=500_000,
                                     queue_size=64), context(pm, "drift"),
                         DirStore(tmp_path))
    pm.register(drift, name="monitor:drift:0")
    rng = np.random.default_rng(11)
    ref = {"x": rng.normal(size=(50_000, 3)), "kind": rng.choice(["a", "b", "c"], 50_000)}
    drift.capture_profile("big", 1, ref, save=False)
    kll = KllSketch(200, seed=1)
    batch = 20_000
    # pre-generated batches, reused, so the test measures the sketches, not the generator
    batches = [{"x": rng.normal(size=(batch, 3)), "kind": rng.choice(["a", "b", "c"], batch)} for _ in range(4)]
    samples = []
    tracemalloc.start()
    try:
        for i in range(10_000_000 // batch):
            data = batches[i % 4]
            pm.hooks.predictions_served(event("big", 1, data))
            kll.update(data["x"][:, 0])
            if i % 25 == 24:
                drift.flush()
                gc.collect()
                window = drift.window("big", 1)
                samples.append((window.total_rows, tracemalloc.get_traced_memory()[0], window.nbytes,
                                kll.retained))
    finally:
        tracemalloc.stop()
    drift.flush()
    window = drift.window("big", 1)
    assert window.total_rows == 10_000_000 and drift.worker.dropped == 0
    assert window.window_rows == 50_000
    first, last = samples[1], samples[-1]  # samples[0] includes one-time allocations (profile, first window)
    print(f"\nrows {first[0]:,} -> {last[0]:,}: traced memory {first[1]:,} -> {last[1]:,} bytes; window arrays "
          f"{first[2]:,} -> {last[2]:,} bytes; KLL items {first[3]} -> {last[3]} (max {max(s[3] for s in samples)})")
    assert first[0] <= 1_000_000 and last[0] == 10_000_000
    assert last[2] == first[2]  # the window's arrays have a fixed size
    assert last[1] - first[1] < 256 * 1024, samples  # traced Python+numpy memory: flat, not growing with rows
    assert max(s[3] for s in samples) <= 3 * 200 + 64  # KLL keeps about 3k items, whatever n is
    assert kll.n == 10_000_000
    drift.close()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200_000), k=st.sampled_from([100, 200, 400]))
def test_kll_rank_error_is_bounded_and_merge_is_equivalent(seed, n, k):
    rng = np.random.default_rng(seed)
    data = rng.standard_t(3, size=n)
    a, b = KllSketch(k, seed=seed), KllSketch(k, seed=seed + 1)
    a.update(data[: n // 2])
    b.update(data[n // 2:])
    merged = a.merge(b)
    assert merged.n == n and merged.min == data.min() and merged.max == data.max()
    qs = np.linspace(0.01, 0.99, 33)
    est = merged.quantiles(qs)
    ranks = np.searchsorted(np.sort(data), est, side="right") / n
    tolerance = 3.0 / k * 2.0 + 1.0 / n  # loose form of the O(1/k) KLL bound, both merge halves included
    assert np.max(np.abs(ranks - qs)) <= max(tolerance, 0.05 if k == 100 else 0.03)
    assert merged.retained <= 3 * k + 64


def test_capped_counter_keeps_the_most_frequent():
    c = CappedCounter(cap=5)
    rng = np.random.default_rng(0)
    for _ in range(50):
        c.update(np.concatenate([np.repeat(["a", "b", "c"], 50), rng.integers(0, 10_000, 40).astype(str)]))
        assert len(c.counts) < 10
    cats, counts = c.finalize()
    assert cats[:3] == ["a", "b", "c"] and cats[-1] == "__other__" and sum(counts) == c.n


def test_chi2_survival_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for x, dof in [(0.5, 1), (3.0, 2), (10.0, 5), (50.0, 20), (300.0, 250), (1e-3, 3)]:
        assert stats.chi2_sf(x, dof) == pytest.approx(scipy_stats.chi2.sf(x, dof), rel=1e-9, abs=1e-300)


def test_scores_are_zero_for_equal_distributions_and_symmetric_js():
    p = np.array([10, 20, 30, 40])
    assert stats.psi(p, p) == pytest.approx(0) and stats.ks_statistic(p, p) == 0 and stats.js_distance(p, p) == 0
    q = np.array([40, 30, 20, 10])
    assert stats.js_distance(p, q) == pytest.approx(stats.js_distance(q, p))
    assert 0 < stats.js_distance(p, q) <= 1


def test_profile_round_trips_through_storage_and_csv_equals_arrays(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.gamma(2.0, size=(3000, 2))
    colour = rng.choice(["red", "green"], 3000)
    csv_path = tmp_path / "train.csv"
    lines = ["a,b,colour"] + [f"{float(r[0])!r},{float(r[1])!r},{c}" for r, c in zip(x, colour)]
    csv_path.write_text("\n".join(lines) + "\n")
    from_csv = build_profile(read_data(csv_path, chunk_rows=700), model="m", version=4)
    from_arrays = build_profile(lambda: [{"a": x[:, 0], "b": x[:, 1], "colour": colour}], model="m", version=4)
    for name in ("a", "b", "colour"):
        assert from_csv.features[name].counts == from_arrays.features[name].counts
        assert from_csv.features[name].kind == from_arrays.features[name].kind
    assert from_csv.features["colour"].kind == "categorical"
    store = DirStore(tmp_path / "store")
    from mlops_monitors.profile import save_profile

    key = save_profile(store, from_csv)
    assert key == "profiles/m/4.json"
    again = load_profile(store, "m", 4)
    assert again == from_csv
    np.save(tmp_path / "train.npy", x)
    matrix = build_profile(read_data(tmp_path / "train.npy", chunk_rows=1000))
    assert set(matrix.features) == {"input-0[0]", "input-0[1]"}
    assert matrix.features["input-0[0]"].counts == from_arrays.features["a"].counts


def test_drift_monitor_loads_profiles_from_storage_and_persists_reports(tmp_path):
    pm = PluginManager(autoload=False)
    store = DirStore(tmp_path / "store")
    drift = DriftMonitor(DriftConfig(evaluate_interval_s=0, window_rows=1000, subwindows=2, min_rows=200), context(pm, "drift"), store)
    pm.register(drift, name="monitor:drift:0")
    rng = np.random.default_rng(8)
    from mlops_monitors.profile import save_profile

    save_profile(store, build_profile(lambda: [{"age": rng.normal(40, 10, 5000)}], model="risk", version=7))
    for _ in range(10):
        pm.hooks.predictions_served(event("risk", 7, {"age": rng.normal(60, 10, 100)}))
    pm.hooks.predictions_served(event("risk", 99, {"age": rng.normal(60, 10, 100)}))  # no profile: skipped
    drift.flush()
    assert drift.latest_report("risk", 7).drifted == ["age"]
    assert drift.unprofiled_events == 1
    drift.close()  # persists the latest report
    saved = json.loads(store.read_bytes(report_key("risk", 7)))
    assert saved["drifted"] == ["age"] and saved["rows"] == 1000


def test_profile_captured_when_a_bundle_with_an_example_is_registered(tmp_path):
    from mlops_core.bundle import save_bundle

    pm = PluginManager(autoload=False)
    store = DirStore(tmp_path / "store")
    drift = DriftMonitor(DriftConfig(), context(pm, "drift"), store)
    pm.register(drift, name="monitor:drift:0")

    class Model:
        def predict(self, x):
            return x.sum(axis=1)

    rng = np.random.default_rng(2)
    info = save_bundle(Model(), tmp_path / "bundle", example=rng.normal(size=(5, 2)))
    np.save(info.path / "example.npy", rng.normal(size=(500, 2)))  # the example batch the bundle carries
    pm.hooks.bundle_saved(info.path, dict(info.manifest))
    pm.hooks.version_registered(ModelVersion(model="adder", version=1, artifact=ArtifactRef("file:///x", info.digest)))
    drift.flush()
    profile = load_profile(store, "adder", 1)
    assert set(profile.features) == {"input-0[0]", "input-0[1]"} and profile.rows == 500
    drift.close()
