"""The ``mlops`` command line.

Every command prints a human table by default and JSON with ``--json``.
Expected failures print ``error: ...`` and ``hint: ...`` without a traceback.

Exit codes (also in docs/cli.md):

==== ==============================================================
0    success
1    an MlopsError without a more specific code
2    invalid input or usage (bad arguments, names, URIs, tensors)
3    configuration error (stack file, environment, unknown backend)
4    plugin error (a plugin failed to load; ``doctor`` found problems)
5    not found (model, version, alias, deployment)
6    already exists
7    integrity error (hash mismatch, tampered or truncated bundle)
8    backend unavailable (database, object store, engine unreachable)
70   internal error (a bug: the traceback is printed, please report it)
130  interrupted
==== ==============================================================
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ._version import __version__

EXIT_OK, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 70, 130


# ----------------------------------------------------------------- output
def _print_json(data: Any) -> None:
    from .entities import to_json

    json.dump(to_json(data), sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print rows as an aligned text table (``(none)`` when empty); plugins' commands use it too."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(none)")


def add_header_flags(parser: argparse.ArgumentParser) -> None:
    """``--header`` / ``--no-header`` for commands that read CSV (see :mod:`mlops_core.tabular`)."""
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="whether a CSV's first row names the columns (default: detected; see docs/cli.md)")


def _kv(pairs: Iterable[str] | None) -> dict[str, str]:
    from .errors import InvalidInputError

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"expected KEY=VALUE, got {pair!r}", hint="for example --tag team=fraud")
        out[key] = value
    return out


# --------------------------------------------------------------- commands
def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_plugin_manager

    pm = get_plugin_manager()
    infos = pm.plugins()
    failures = pm.all_failures()
    specs = pm.catalog.specs()
    if args.json:
        _print_json({
            "plugins": [{"name": p.name, "distribution": p.distribution, "version": p.version,
                         "hooks": list(p.hooks), "backends": list(p.backends)} for p in infos],
            "backends": [{"component": b.component, "name": b.name, "plugin": b.plugin, "summary": b.summary,
                          "schemes": list(b.schemes)} for b in specs],
            "failures": [{"name": f.name, "distribution": f.distribution, "version": f.version,
                          "stage": f.stage, "error": f.error} for f in failures],
        })
    else:
        print_table([(p.name, p.distribution or "-", p.version or "-", ", ".join(p.backends) or "-",
                 ", ".join(h.removeprefix("mlops_") for h in p.hooks)) for p in infos],
               ["plugin", "distribution", "version", "backends", "hooks"])
        if specs:
            print()
            print_table([(f"{b.component}:{b.name}", ", ".join(b.schemes) or "-", b.summary or "-") for b in specs],
                        ["backend", "URL schemes", "summary"])
        for f in failures:
            print(f"\nBROKEN {f.describe()}", file=sys.stderr)
    return 4 if failures else 0


def _unknown_backends(config: Any, pm: Any) -> list[dict[str, str]]:
    """Backends named in the stack that no loaded plugin offers, each with the fix."""
    from .plugins import COMPONENTS

    problems = []
    wanted = [(c, cc.backend, c) for c, cc in config.components.items()]
    wanted += [("monitor", m.backend, f"monitor #{i + 1}") for i, m in enumerate(config.monitors)]
    for component, backend, where in wanted:
        known = pm.catalog.names(component) if component in COMPONENTS else []
        if backend not in known:
            import difflib

            close = difflib.get_close_matches(backend, known, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + \
                (f"available: {', '.join(known)}" if known else "no plugin offers this component") + \
                "; `mlops plugins` lists what is installed"
            problems.append({"check": f"{where} ({backend})", "ok": False,
                             "detail": f"no installed plugin offers the {component} backend {backend!r}", "hint": hint})
    return problems


def _stack_programs(stack: Any) -> list[dict[str, Any]]:
    """What the stack's deployer and builder will run (their ``programs()``), or why they cannot be built."""
    out: list[dict[str, Any]] = []
    for component in ("deployer", "builder"):
        backend = stack.config.components[component].backend
        try:
            commands = [list(map(str, cmd)) for cmd in stack.component(component).programs()]
        except Exception as exc:  # a broken backend is reported by doctor; here it only hides its programs
            out.append({"component": component, "backend": backend, "error": str(exc).splitlines()[0]})
            continue
        out.extend({"component": component, "backend": backend, "command": cmd} for cmd in commands)
    return out


def _stack_file_warnings(path: Any) -> list[str]:
    """Why a stack file is not to be trusted: others can change what it makes ``mlops`` run."""
    import stat as _stat

    if path is None:
        return []
    st = path.stat()
    warnings = []
    if st.st_mode & (_stat.S_IWGRP | _stat.S_IWOTH):
        warnings.append(f"{path} is writable by other users (mode {oct(_stat.S_IMODE(st.st_mode))}); "
                        "it can name programs mlops runs: chmod go-w it")
    if hasattr(os, "getuid") and st.st_uid not in (os.getuid(), 0):
        warnings.append(f"{path} belongs to another user (uid {st.st_uid}); set MLOPS_CONFIG to a stack file you trust")
    return warnings


def cmd_stack_show(args: argparse.Namespace) -> int:
    from .plugins import get_plugin_manager
    from .stack import Stack, load_config

    config = load_config()
    described = config.describe()
    problems = _unknown_backends(config, get_plugin_manager())
    stack = Stack(config)
    home_existed = config.home.exists()
    try:
        programs = _stack_programs(stack)
    finally:
        stack.close()
        if not home_existed:  # showing a stack leaves nothing behind (building backends makes empty folders)
            for root, _dirs, _files in sorted(os.walk(config.home), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(root)  # only ever removes empty folders
    warnings = _stack_file_warnings(config.config_file)
    if args.json:
        _print_json({**described, "programs": programs, "warnings": warnings, "problems": problems})
    else:
        described.pop("config_file")
        profile = described.pop("profile")
        print(f"source: {described.pop('source')}" + (f"\nstack:  {profile}" if profile else "") +
              f"\nhome:   {described.pop('home')}")
        monitors = described.pop("monitors")
        rows = [(c, d.pop("backend"), ", ".join(f"{k}={v}" for k, v in d.items()) or "-") for c, d in described.items()]
        rows += [("monitor", m.pop("backend"), ", ".join(f"{k}={v}" for k, v in m.items()) or "-") for m in monitors]
        print_table(rows, ["component", "backend", "settings"])
        if programs:
            print("\nprograms this stack runs:")
            for p in programs:
                what = " ".join(shlex.quote(a) for a in p["command"]) if "command" in p else f"(cannot tell: {p['error']})"
                print(f"  {p['component']} ({p['backend']}): {what}")
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        for p in problems:
            print(f"error: {p['check']}: {p['detail']}\nhint: {p['hint']}", file=sys.stderr)
    return 3 if problems else 0


def cmd_stack_list(args: argparse.Namespace) -> int:
    from .stack import find_config_file, list_profiles, load_config

    path = find_config_file()
    names = list_profiles(path)
    active = load_config(path).profile if names else None
    if args.json:
        _print_json({"file": str(path) if path else None, "stacks": names, "active": active})
    else:
        rows = []
        for name in names:
            described = load_config(path, profile=name).describe()
            backends = ", ".join(f"{c}={described[c]['backend']}" for c in ("storage", "registry", "builder", "deployer"))
            rows.append(("*" if name == active else "", name, described["home"], backends))
        print_table(rows, ["", "stack", "home", "backends"])
    return 0


def cmd_stack_use(args: argparse.Namespace) -> int:
    from .stack import use_profile

    marker = use_profile(args.name)
    if args.json:
        _print_json({"active": args.name, "file": str(marker)})
    else:
        print(f"active stack: {args.name} (written to {marker})")
    return 0


def cmd_models_copy(args: argparse.Namespace) -> int:
    from . import api
    from .stack import Stack

    source, target = Stack.load(profile=args.from_stack), Stack.load(profile=args.to_stack)
    try:
        copied = api.copy_version(args.uri, source=source, target=target, name=args.name,
                                  copy_aliases=not args.no_aliases)
    finally:
        source.close()
        target.close()
    if args.json:
        _print_json(copied)
    else:
        aliases = f" ({', '.join(copied.aliases)})" if copied.aliases else ""
        print(f"copied {args.uri} from {args.from_stack} to {args.to_stack} as {copied.uri}{aliases}  "
              f"artifact {copied.artifact.digest[:19]}...")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Build every configured backend (monitors too) and run its check; exit 4 on any problem.

    Each failed check carries the fix (``hint``); a backend that cannot even be built is a
    failed check, so a misspelled backend or an unreachable base is reported here, before
    ``save`` or ``build`` trip over it.
    """
    from .errors import InvalidInputError, MlopsError
    from .plugins import get_plugin_manager
    from .stack import SINGLE_COMPONENTS, Stack, list_profiles, load_config

    checks: list[dict[str, Any]] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            checks.append({"check": name, "ok": True, "detail": fn()})
        except MlopsError as exc:
            checks.append({"check": name, "ok": False, "detail": exc.message, "hint": exc.hint})
        except Exception as exc:  # a backend bug is still a finding, not a crash
            checks.append({"check": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}",
                           "hint": "this is a bug in the backend's plugin; report it to its authors"})

    pm = get_plugin_manager()
    requested = args.components or [*SINGLE_COMPONENTS, "monitors"]
    unknown = sorted(set(requested) - {*SINGLE_COMPONENTS, "monitors"})
    if unknown:
        raise InvalidInputError(f"unknown component(s) {', '.join(unknown)}",
                                hint=f"choose from {', '.join([*SINGLE_COMPONENTS, 'monitors'])}")
    checks.append({"check": "plugins", "ok": True, "detail": f"{len(pm.plugins())} loaded"})
    for failure in pm.all_failures():
        checks.append({"check": f"plugin {failure.name}", "ok": False, "detail": failure.describe(),
                       "hint": "fix or uninstall that plugin, or block it with MLOPS_BLOCK_PLUGINS"})
    profiles: list[str | None] = [None]
    if args.all_stacks:
        check("stacks", lambda: ", ".join(list_profiles()) or "(no named stacks)")
        profiles = list(list_profiles()) or [None]
    for profile in profiles:
        prefix = f"[{profile}] " if args.all_stacks and profile else ""
        config_holder: list[Any] = []
        check(f"{prefix}config", lambda p=profile: (config_holder.append(load_config(profile=p)),
                                                   config_holder[0].source + (f" (stack {config_holder[0].profile})"
                                                                              if config_holder[0].profile else ""))[1])
        if not config_holder:
            continue
        config = config_holder[0]
        for warning in _stack_file_warnings(config.config_file):
            checks.append({"check": f"{prefix}stack file", "ok": False, "detail": warning,
                           "hint": "only a stack file you control should name programs to run"})
        stack = Stack(config, pm)
        try:
            for component in requested:
                if component == "monitors":
                    for i, mc in enumerate(config.monitors):
                        check(f"{prefix}monitor #{i + 1} ({mc.backend})", lambda mc=mc: _check_monitor(stack, mc))
                    continue
                backend = config.components[component].backend
                check(f"{prefix}{component} ({backend})", lambda c=component: stack.component(c).check())

            def leftovers(stack: Any = stack) -> str:
                from . import api

                found = api.gc(dry_run=True, stack=stack)
                if not found:
                    return "no temporaries left by killed writers"
                return (f"{len(found)} temporaries ({sum(lo.size for lo in found)} bytes) left by killed writers; "
                        "`mlops gc` removes them")

            check(f"{prefix}leftovers", leftovers)
            for p in _stack_programs(stack):
                if "command" in p:
                    checks.append({"check": f"{prefix}{p['component']} runs", "ok": True,
                                   "detail": " ".join(shlex.quote(a) for a in p["command"])})
        finally:
            stack.close()
    ok = all(c["ok"] for c in checks)
    if args.json:
        _print_json({"ok": ok, "checks": checks})
    else:
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
            if not c["ok"] and c.get("hint"):
                print(f"      fix: {c['hint']}")
    return 0 if ok else 4


def _check_monitor(stack: Any, monitor_config: Any) -> str:
    """Build one monitor on its own (not registered for events) and run its check."""
    monitor = stack._build("monitor", monitor_config)
    try:
        return monitor.check()
    finally:
        monitor.close()


def _load_object(spec: str) -> Any:
    """``pkg.module:attr`` -> the object; a zero-argument callable without predict is called."""
    from .errors import InvalidInputError
    from .plugins import import_string

    sys.path.insert(0, os.getcwd())
    try:
        obj = import_string(spec)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot import {spec!r}: {exc}", hint="use module:attribute, run from the module's folder") from None
    finally:
        sys.path.pop(0)
    if not callable(getattr(obj, "predict", None)) and callable(obj) and not isinstance(obj, type):
        obj = obj()
    return obj


def _read_example(path: str | None, header: bool | None = None) -> Any:
    if not path:
        return None
    from .errors import InvalidInputError

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"example file {p} does not exist", hint="pass a .npy, .csv or .json file")
    if p.suffix == ".json":
        return json.loads(p.read_text())
    import numpy as np

    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    if p.suffix == ".csv":
        from .tabular import read_csv

        return np.asarray(read_csv(p, header=header).as_floats())
    raise InvalidInputError(f"unsupported example file {p.name}", hint="use .npy, .csv or .json")


def cmd_models_save(args: argparse.Namespace) -> int:
    from . import api
    from .entities import Lineage

    from .entities import validate_alias, validate_model_name, validate_tag_key

    # every input is checked before anything is written, so a refused save leaves no bundle behind
    validate_model_name(args.name)
    if args.alias is not None:
        validate_alias(args.alias)
    tags = _kv(args.tag)
    for key in tags:
        validate_tag_key(key)
    source: Any = args.source
    if not Path(args.source).is_dir():
        model = _load_object(args.source)
        source = api.save(model, example=_read_example(args.example, args.header), format=args.format)
    lineage = Lineage(source_run=args.source_run, dataset_uri=args.dataset_uri, parent_version=args.parent_version)
    version = api.register(args.name, source, alias=args.alias, description=args.description or "",
                           tags=tags, lineage=lineage)
    if args.json:
        _print_json(version)
    else:
        aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
        print(f"registered {version.uri}{aliases}  artifact {version.artifact.digest[:19]}...")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from . import api

    page = api.list_models(name_contains=args.contains, tags=_kv(args.tag) or None,
                           page_size=args.page_size, page_token=args.page_token)
    if args.json:
        _print_json({"models": page.items, "next_token": page.next_token})
    else:
        print_table([(m.name, m.latest_version, ", ".join(f"{a}->{v}" for a, v in sorted(m.aliases.items())),
                 m.description[:40]) for m in page.items], ["name", "latest", "aliases", "description"])
        if page.next_token:
            print(f"more: --page-token {page.next_token}")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from . import api

    if args.target.startswith("models:/") and ("/" in args.target[8:] or "@" in args.target):
        version = api.resolve(args.target)
        if args.json:
            _print_json(version)
        else:
            for key, value in (("uri", version.uri), ("aliases", ", ".join(version.aliases) or "-"),
                               ("artifact", str(version.artifact)), ("created", version.created_at.isoformat()),
                               ("description", version.description or "-"),
                               ("tags", ", ".join(f"{k}={v}" for k, v in version.tags.items()) or "-"),
                               ("lineage", ", ".join(f"{k}={v}" for k, v in _fields(version.lineage).items() if v is not None) or "-")):
                print(f"{key:12} {value}")
        return 0
    name = args.target.removeprefix("models:/")
    model = api.get_model(name)
    if args.json:
        _print_json(model)
    else:
        for key, value in (("name", model.name), ("latest", model.latest_version),
                           ("aliases", ", ".join(f"{a}->{v}" for a, v in sorted(model.aliases.items())) or "-"),
                           ("tags", ", ".join(f"{k}={v}" for k, v in model.tags.items()) or "-"),
                           ("description", model.description or "-"), ("created", model.created_at.isoformat())):
            print(f"{key:12} {value}")
    return 0


def _fields(obj: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(obj)


def cmd_models_versions(args: argparse.Namespace) -> int:
    from . import api

    page = api.list_versions(args.name, tags=_kv(args.tag) or None, page_size=args.page_size, page_token=args.page_token)
    if args.json:
        _print_json({"versions": page.items, "next_token": page.next_token})
    else:
        print_table([(v.model, v.version, ", ".join(v.aliases), v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                 v.artifact.digest[:19]) for v in page.items], ["model", "version", "aliases", "created (UTC)", "artifact"])
        if page.next_token:
            print(f"more: --page-token {page.next_token}")
    return 0


def cmd_models_alias(args: argparse.Namespace) -> int:
    from . import api
    from .errors import InvalidInputError

    if args.delete:
        change = api.delete_alias(args.name, args.alias)
    else:
        if args.version is None:
            raise InvalidInputError("missing VERSION", hint="mlops models alias NAME ALIAS VERSION (or --delete)")
        change = api.set_alias(args.name, args.alias, args.version)
    if args.json:
        _print_json(change)
    else:
        print(f"{change.model}@{change.alias}: {change.previous or '-'} -> {change.version or '(deleted)'}")
    return 0


def cmd_models_tag(args: argparse.Namespace) -> int:
    from . import api

    for key, value in _kv(args.pairs).items():
        api.set_tag(args.name, key, value, version=args.version)
    for key in args.delete or []:
        api.set_tag(args.name, key, None, version=args.version)
    if args.json:
        _print_json({"ok": True})
    return 0


def cmd_models_sign(args: argparse.Namespace) -> int:
    from . import api
    from .signing import SIGNATURE_TAG

    version = api.sign(args.uri, key=args.key)
    if args.json:
        _print_json({"uri": version.uri, "signature": version.tags.get(SIGNATURE_TAG)})
    else:
        print(f"signed {version.uri}: {version.tags.get(SIGNATURE_TAG, '')[:32]}...")
    return 0


def cmd_keys_new(args: argparse.Namespace) -> int:
    from .signing import generate_key, key_id, _load_public

    private, public = generate_key(args.path)
    kid = key_id(_load_public(public))
    if args.json:
        _print_json({"private_key": str(private), "public_key": str(public), "key_id": kid})
    else:
        print(f"private key {private} (keep it secret; [security] signing_key)\n"
              f"public key  {public} (share it; [security] trusted_keys)\nkey id      {kid}")
    return 0


def cmd_models_delete(args: argparse.Namespace) -> int:
    from . import api
    from .errors import InvalidInputError

    what = f"version {args.version} of {args.name}" if args.version else f"model {args.name} and all its versions"
    if not args.yes:
        raise InvalidInputError(f"refusing to delete {what} without --yes", hint="add --yes to confirm")
    if args.version:
        api.delete_version(args.name, args.version)
    else:
        api.delete_model(args.name)
    if args.json:
        _print_json({"deleted": what})
    else:
        print(f"deleted {what}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from . import api

    image = api.build(args.uri, push=args.push)
    if args.json:
        _print_json(image)
    else:
        print(f"built {image.reference}  {image.digest}" + (f"  layout {image.layout}" if image.layout else ""))
    return 0


def _print_deployment(d: Any, as_json: bool) -> None:
    if as_json:
        _print_json(d)
    else:
        print_table([(d.name, f"{d.model}/{d.version}", d.state, d.url or "-", d.previous_version or "-", d.backend)],
               ["name", "version", "state", "url", "previous", "backend"])


def cmd_deploy(args: argparse.Namespace) -> int:
    from . import api

    options = _kv(args.option)
    _print_deployment(api.deploy(args.uri, name=args.name, wait=args.wait, options=options), args.json)
    return 0


def cmd_deployments_list(args: argparse.Namespace) -> int:
    from . import api

    items = api.deployments()
    if args.json:
        _print_json(items)
    else:
        print_table([(d.name, f"{d.model}/{d.version}", d.state, d.url or "-", d.previous_version or "-", d.backend)
                for d in items], ["name", "version", "state", "url", "previous", "backend"])
    return 0


def cmd_deployments_status(args: argparse.Namespace) -> int:
    from . import api

    d = api.deployment(args.name)
    _print_deployment(d, args.json)
    return 0 if d.state == "ready" else 1


def cmd_deployments_logs(args: argparse.Namespace) -> int:
    from . import api

    sys.stdout.write(api.deployment_logs(args.name, tail=args.tail))
    return 0


def cmd_deployments_rollback(args: argparse.Namespace) -> int:
    from . import api

    _print_deployment(api.rollback(args.name, wait=args.wait), args.json)
    return 0


def cmd_deployments_delete(args: argparse.Namespace) -> int:
    from . import api

    api.undeploy(args.name)
    if args.json:
        _print_json({"deleted": args.name})
    else:
        print(f"deleted deployment {args.name}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from . import api

    found = api.gc(older_than=args.older_than, dry_run=args.dry_run)
    total = sum(lo.size for lo in found)
    if args.json:
        _print_json({"dry_run": args.dry_run, "bytes": total, "leftovers": [_fields(lo) for lo in found]})
        return 0
    if not found:
        print("nothing to clean")
        return 0
    print_table([(lo.kind, lo.where, lo.size, f"{lo.age_s / 3600:.1f} h") for lo in found],
                ["kind", "where", "bytes", "age"])
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(found)} leftover(s), {total} bytes")
    return 0


def cmd_plugin_new(args: argparse.Namespace) -> int:
    from .scaffold import create_plugin

    path = create_plugin(args.name, args.component, Path(args.dest))
    if args.json:
        _print_json({"path": str(path)})
    else:
        print(f"created {path}\nnext: pip install -e {path} && pytest {path}")
    return 0


# ----------------------------------------------------------------- parser
def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """The whole ``mlops`` parser, plugin commands included (used by the docs generator too)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

    parser = argparse.ArgumentParser(
        prog="mlops",
        description="Carry a model from a training script to a monitored service, with the backends you choose.",
        epilog="Stack: mlops.toml or [tool.mlops] in pyproject.toml; MLOPS_* variables override. Docs: docs/index.md",
    )
    parser.add_argument("--version", action="version", version=f"mlops-core {__version__}")
    parser.add_argument("--stack", metavar="NAME", default=None,
                        help="use the named stack [stacks.NAME] of the stack file (default: $MLOPS_STACK, "
                             "`mlops stack use`, default_stack)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", parents=[common], help="list plugins, their hooks and backends (exit 4 if any is broken)")
    p.set_defaults(func=cmd_plugins)

    stack = sub.add_parser("stack", help="inspect the stack configuration").add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    stack.add_parser("show", parents=[common], help="show the resolved stack").set_defaults(func=cmd_stack_show)
    stack.add_parser("list", parents=[common], help="list the named stacks of the stack file").set_defaults(
        func=cmd_stack_list)
    p = stack.add_parser("use", parents=[common], help="make a named stack the active one for this project")
    p.add_argument("name")
    p.set_defaults(func=cmd_stack_use)

    p = sub.add_parser("doctor", parents=[common], help="check config, plugins and backend connectivity")
    p.add_argument("components", nargs="*", metavar="COMPONENT",
                   help="only these of storage, registry, builder, deployer, batch, monitors (default: all)")
    p.add_argument("--all-stacks", action="store_true", help="check every named stack of the stack file")
    p.set_defaults(func=cmd_doctor)

    models = sub.add_parser("models", help="save, list and manage registered models").add_subparsers(
        dest="models_command", metavar="ACTION", required=True)
    p = models.add_parser("save", parents=[common], help="save a model (bundle folder or module:attr) and register a version")
    p.add_argument("source", help="a bundle folder, or module:attribute naming a model object or a function returning one")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", help="point this alias at the new version (e.g. staging)")
    p.add_argument("--example", help="example input (.npy, .csv, .json) to infer the signature")
    add_header_flags(p)
    p.add_argument("--format", help="model format to save with (e.g. onnx, skops); default: chosen by the model's type")
    p.add_argument("--description")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--source-run", help="lineage: the run that produced the model")
    p.add_argument("--dataset-uri", help="lineage: the training data")
    p.add_argument("--parent-version", type=int, help="lineage: the version this one derives from")
    p.set_defaults(func=cmd_models_save)

    p = models.add_parser("list", parents=[common], help="list registered models")
    p.add_argument("--contains", help="name contains this text")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only models with this tag")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p.set_defaults(func=cmd_models_list)

    p = models.add_parser("show", parents=[common], help="show a model (NAME) or a version (models:/NAME/V or @ALIAS)")
    p.add_argument("target")
    p.set_defaults(func=cmd_models_show)

    p = models.add_parser("versions", parents=[common], help="list versions, newest first")
    p.add_argument("name", nargs="?", help="model name (default: all models)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p.set_defaults(func=cmd_models_versions)

    p = models.add_parser("alias", parents=[common], help="point ALIAS at VERSION, or --delete it")
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", type=int, nargs="?")
    p.add_argument("--delete", action="store_true")
    p.set_defaults(func=cmd_models_alias)

    p = models.add_parser("tag", parents=[common], help="set KEY=VALUE tags (or --delete KEY) on a model or --version")
    p.add_argument("name")
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--version", type=int)
    p.add_argument("--delete", action="append", metavar="KEY")
    p.set_defaults(func=cmd_models_tag)
    p = models.add_parser("sign", parents=[common],
                          help="sign a registered version's bundle digest with an Ed25519 key (needs cryptography)")
    p.add_argument("uri", metavar="MODEL_URI")
    p.add_argument("--key", default=None, metavar="PATH", help="private key (default: [security] signing_key)")
    p.set_defaults(func=cmd_models_sign)

    p = models.add_parser("delete", parents=[common], help="delete a model, or one --version (needs --yes)")
    p.add_argument("name")
    p.add_argument("--version", type=int)
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=cmd_models_delete)

    p = models.add_parser("copy", parents=[common], help="copy a version between named stacks (hashes verified; "
                                                         "tags, lineage and aliases kept)")
    p.add_argument("uri", help="models:/NAME[/VERSION|@ALIAS] in the source stack")
    p.add_argument("--from", dest="from_stack", required=True, metavar="STACK", help="source stack name")
    p.add_argument("--to", dest="to_stack", required=True, metavar="STACK", help="target stack name")
    p.add_argument("--name", default=None, help="model name in the target (default: the same)")
    p.add_argument("--no-aliases", action="store_true", help="do not point the source's aliases at the copy")
    p.set_defaults(func=cmd_models_copy)

    from .batch.cli import add_parser as add_batch_parser

    add_batch_parser(sub, common)

    p = sub.add_parser("build", parents=[common], help="build an image for a version with the stack's builder")
    p.add_argument("uri", help="models:/NAME[/VERSION|@ALIAS]")
    p.add_argument("--push", action="store_true", help="push to the configured registry")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("deploy", parents=[common], help="deploy a version (an existing name is updated with no failed request)")
    p.add_argument("uri", help="models:/NAME[/VERSION|@ALIAS]")
    p.add_argument("--name", help="deployment name (default: the model name)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for readiness")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="backend option (e.g. port=8080)")
    p.set_defaults(func=cmd_deploy)

    deps = sub.add_parser("deployments", help="list and manage deployments").add_subparsers(
        dest="deployments_command", metavar="ACTION", required=True)
    deps.add_parser("list", parents=[common], help="list deployments").set_defaults(func=cmd_deployments_list)
    p = deps.add_parser("status", parents=[common], help="state of one deployment (exit 1 unless ready)")
    p.add_argument("name")
    p.set_defaults(func=cmd_deployments_status)
    p = deps.add_parser("logs", help="recent log lines of a deployment")
    p.add_argument("name")
    p.add_argument("--tail", type=int, default=100)
    p.set_defaults(func=cmd_deployments_logs)
    p = deps.add_parser("rollback", parents=[common], help="go back to the previously deployed version")
    p.add_argument("name")
    p.add_argument("--wait", type=float, default=60.0)
    p.set_defaults(func=cmd_deployments_rollback)
    p = deps.add_parser("delete", parents=[common], help="stop and forget a deployment")
    p.add_argument("name")
    p.set_defaults(func=cmd_deployments_delete)

    keys = sub.add_parser("keys", help="signing keys for bundles").add_subparsers(
        dest="keys_command", metavar="ACTION", required=True)
    p = keys.add_parser("new", parents=[common], help="create an Ed25519 key pair: PATH (private, 0600) and PATH.pub")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=cmd_keys_new)

    p = sub.add_parser("gc", parents=[common],
                       help="remove temporaries left by killed writers (older than an hour, not in use)")
    p.add_argument("--older-than", default=None, metavar="AGE",
                   help="only temporaries unchanged for this long: seconds or 30m, 1h, 2d (default: [gc] older_than, else 1h)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(func=cmd_gc)

    plugin = sub.add_parser("plugin", help="tools for plugin authors").add_subparsers(
        dest="plugin_command", metavar="ACTION", required=True)
    p = plugin.add_parser("new", parents=[common], help="generate a ready-to-install plugin package")
    p.add_argument("name", help="distribution name, e.g. mlops-foo")
    p.add_argument("--component", required=True,
                   choices=["storage", "registry", "builder", "deployer", "monitor", "format"])
    p.add_argument("--dest", default=".", help="folder to create the package in")
    p.set_defaults(func=cmd_plugin_new)

    if with_plugins:
        _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: Any) -> None:
    from .catalog import CommandRegistrar
    from .plugins import get_plugin_manager

    pm = get_plugin_manager()
    for impl in pm.pm.hook.mlops_add_cli_commands.get_hookimpls():
        # One registrar per plugin, so an invalid or duplicate command names its plugin.
        commands = CommandRegistrar(sub, impl.plugin_name)
        pm.call_each("mlops_add_cli_commands", only=impl.plugin_name, commands=commands, subparsers=commands)


def _run(args: argparse.Namespace) -> int:
    func = getattr(args, "func", None)
    if func is None:
        handler = getattr(args, "handler", None)
        if handler is None:
            return -1
        from .plugins import import_string

        func = import_string(handler) if isinstance(handler, str) else handler
    return int(func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import MlopsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "stack", None):
        # the environment, so processes started from here (servers, builds) see the same stack
        os.environ["MLOPS_STACK"] = args.stack
    try:
        code = _run(args)
        if code == -1:
            parser.print_help()
            return 2
        return code
    except MlopsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception:
        import traceback

        traceback.print_exc()
        print("internal error: this is a bug in mlops-core or a plugin; please report it with the traceback above",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
