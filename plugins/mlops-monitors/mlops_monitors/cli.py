"""Handlers of ``mlops monitor ...`` (imported only when such a command runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from mlops_core.cli import print_table
from mlops_core.entities import ModelURI
from mlops_core.errors import InvalidInputError, NotFoundError

from .drift import DriftConfig, DriftReport, analyze, report_key
from .logmon import iter_prediction_records
from .profile import ReferenceProfile, build_profile, load_profile, read_data, save_profile
from .report import render_report

__all__ = ["profile_command", "report_command", "status_command", "replay_command"]


def _stack() -> Any:
    from mlops_core.api import get_stack

    return get_stack()


def _resolve(uri: str) -> tuple[str, int]:
    ref = ModelURI.parse(uri)
    if ref.version is not None:
        return ref.name, ref.version
    from mlops_core.api import resolve

    version = resolve(uri)
    return version.model, version.version


def _g(x: Any) -> str:
    return "" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def _print_report(report: DriftReport) -> None:
    print_table([(f.name, f.kind, f.method, _g(f.score), _g(f.threshold), f.status.upper() if f.drifted else f.status,
                  _g(f.p_value), f"{f.effect_name} {_g(f.effect)}", _g(f.scores.get("psi")), f.rows)
                 for f in sorted(report.features, key=lambda f: (not f.drifted, f.name))],
                ["feature", "kind", "method", "score", "threshold", "status", "p-value", "effect", "psi", "rows"])
    print(f"\n{len(report.drifted)} of {len(report.features)} feature(s) drifted; {report.rows} rows scored")


# ------------------------------------------------------------------ profile
def profile_command(args: Any) -> int:
    model, version = _resolve(args.model_uri)
    chunks = read_data(args.data, layout=args.layout, input_name=args.input_name)
    profile = build_profile(chunks, model=model, version=version, n_bins=args.bins,
                            categorical=args.categorical, source=f"from {Path(args.data).name}")
    key = save_profile(_stack().storage, profile)
    if args.out:
        Path(args.out).write_bytes(profile.to_json())
    if args.json:
        print(json.dumps({"key": key, "model": model, "version": version, "rows": profile.rows,
                          "features": sorted(profile.features)}))
        return 0
    print_table([(f.name, f.kind, f.count, f.missing, _g(f.mean), _g(f.std), _g(f.min), _g(f.max), f.n_bins)
            for f in profile.features.values()],
           ["feature", "kind", "rows", "missing", "mean", "std", "min", "max", "bins"])
    print(f"\nstored the reference profile of models:/{model}/{version} at {key}")
    return 0


# ------------------------------------------------------------------- replay
def _record_batches(storage: Any, model: str, version: int, since: str | None,
                    until: str | None) -> Iterator[dict[str, Any]]:
    for record in iter_prediction_records(storage, model, version=version, since=since, until=until):
        if record.get("error") or not record.get("inputs"):
            continue
        yield {name: np.asarray(values) for name, values in record["inputs"].items()}


def _replay(storage: Any, profile: ReferenceProfile, since: str | None, until: str | None) -> DriftReport:
    report = analyze(profile, _record_batches(storage, profile.model, profile.version, since, until),
                     DriftConfig(), source="replay of logged predictions")
    if report.rows == 0:
        raise NotFoundError(f"no logged predictions of models:/{profile.model}/{profile.version} to replay",
                            hint='add [[monitors]] backend = "log" (sample_rate = 1.0 for full fidelity) and serve')
    return report


def replay_command(args: Any) -> int:
    model, version = _resolve(args.model_uri)
    storage = _stack().storage
    profile = load_profile(storage, model, version)
    report = _replay(storage, profile, args.since, args.until)
    if args.html:
        Path(args.html).write_text(render_report(profile, report), encoding="utf-8")
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        _print_report(report)
        if args.html:
            print(f"HTML report: {args.html}")
    return 0


# ------------------------------------------------------------------- report
def report_command(args: Any) -> int:
    model, version = _resolve(args.model_uri)
    storage = _stack().storage
    profile = load_profile(storage, model, version)
    if args.data:
        chunks = read_data(args.data, layout=args.layout, input_name=args.input_name)
        report = analyze(profile, chunks(), DriftConfig(), source=f"file {Path(args.data).name}")
    elif args.live:
        key = report_key(model, version)
        if not storage.exists(key):
            raise NotFoundError(f"no stored drift window for models:/{model}/{version} ({key})",
                                hint="run a server with the drift monitor, or use --data / the logs")
        report = DriftReport.from_dict(json.loads(storage.read_bytes(key)))
    else:
        report = _replay(storage, profile, args.since, args.until)
    out = Path(args.out)
    out.write_text(render_report(profile, report), encoding="utf-8")
    print(f"wrote {out} ({len(report.drifted)} of {len(report.features)} feature(s) drifted, {report.rows} rows)")
    return 0


# ------------------------------------------------------------------- status
def status_command(args: Any) -> int:
    storage = _stack().storage
    prefix = f"profiles/{args.model}/" if args.model else "profiles/"
    rows = []
    for key in storage.list(prefix):
        parts = key.split("/")
        if len(parts) != 3 or not parts[2].endswith(".json"):
            continue
        model, version = parts[1], parts[2][:-5]
        try:
            profile = ReferenceProfile.from_json(storage.read_bytes(key))
        except (InvalidInputError, ValueError, KeyError):
            continue
        latest = report_key(model, version)
        report = DriftReport.from_dict(json.loads(storage.read_bytes(latest))) if storage.exists(latest) else None
        rows.append({"model": model, "version": version, "features": len(profile.features),
                     "reference_rows": profile.rows,
                     "window_rows": report.rows if report else None,
                     "drifted": report.drifted if report else None,
                     "max_psi": max((f.scores.get("psi", 0.0) for f in report.features), default=None)
                     if report else None,
                     "scored_at": report.created_at if report else None})
    if args.json:
        print(json.dumps(rows))
        return 0
    print_table([(r["model"], r["version"], r["features"], r["reference_rows"], r["window_rows"] or "-",
             ("DRIFT: " + ", ".join(r["drifted"])) if r["drifted"] else ("ok" if r["drifted"] is not None else "-"),
             _g(r["max_psi"]), (r["scored_at"] or "-")[:19]) for r in rows],
           ["model", "version", "features", "ref rows", "window rows", "drift", "max psi", "scored at"])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `mlops monitor ...`")
