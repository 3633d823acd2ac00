"""The core stays light: importing it and running --help pull no heavy dependency.

Never asserts on wall time (benchmarks/bench_core.py measures that); it asserts on
*what* gets imported, which is what makes start-up slow.
"""

import json
import subprocess
import sys

HEAVY = ["numpy", "pandas", "sklearn", "scipy", "requests", "uvicorn", "sqlalchemy", "docker",
         "mlops_server.server", "mlops_server.app", "fsspec.implementations.local", "sqlite3", "cloudpickle",
         "mlflow"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_mlops_core_imports_nothing_heavy():
    loaded = _modules_after("import mlops_core")
    assert not [m for m in HEAVY if m in loaded]
    assert "pluggy" not in loaded  # even the plugin machinery loads on first use


def test_cli_help_imports_nothing_heavy():
    code = ("import sys\nfrom mlops_core import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass")
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_cli_help_does_not_load_the_batch_worker():
    """``mlops --help`` adds ``mlops batch`` but loads its data types and worker only when a job runs."""
    loaded = _modules_after("import sys; sys.argv = ['mlops', '--help']\n"
                            "from mlops_core.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass")
    assert "mlops_core.batch.cli" in loaded
    assert not {"mlops_core.batch.worker", "mlops_core.batch.types"} & loaded


def test_public_api_is_explicit():
    import mlops_core

    for name in mlops_core.__all__:
        assert getattr(mlops_core, name) is not None, name
