"""Count how often a hostile pickle runs while another process swaps it with the good one during loads.

    .venv/bin/python benchmarks/security/swap_race.py --loads 2000

Two cases, as in issue 17: loading a bundle folder, and ``mlops.load("models:/...")``
with only the local cache folder tampered with. Prints loads, refusals, swaps and
hostile runs per case. To measure the code before the fix, run the same script with
``PYTHONPATH`` pointing at a checkout of the older commit (plus
``mlops_core/testing/race.py`` copied in).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def race(load, target: Path, counter: Path, work: Path, loads: int) -> dict[str, int]:
    from mlops_core.errors import IntegrityError
    from mlops_core.testing.race import FileSwapper, hostile_pickle

    out = {"loads": loads, "loaded": 0, "refused": 0}
    with FileSwapper(target, target.read_bytes(), hostile_pickle(counter), work) as swapper:
        for _ in range(loads):
            try:
                load()
                out["loaded"] += 1
            except IntegrityError:
                out["refused"] += 1
            except Exception:  # the hostile pickle returns None: predict() fails after it ran
                out["loaded"] += 1
    out["swaps"] = swapper.swaps
    out["hostile_runs"] = len(counter.read_bytes()) if counter.exists() else 0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.chdir(root)
        os.environ["MLOPS_HOME"] = str(root / ".mlops")
        import mlops_core
        from mlops_core.bundle import load_bundle, save_bundle
        from mlops_core.stack import Stack
        from mlops_core.testing.models import DoublingModel

        import mlops_core.bundle as b
        print(f"mlops_core from {Path(b.__file__).parent}", file=sys.stderr)
        info = save_bundle(DoublingModel(), root / "bundle")
        folder = race(lambda: load_bundle(info.path).model.predict([1.0]), info.path / "model.pkl",
                      root / "count-folder", root / "swap-folder", args.loads)
        stack = Stack()
        mlops_core.register("iris", DoublingModel(), stack=stack)
        mlops_core.load("models:/iris/1", stack=stack)
        cached = next((stack.home / "cache" / "bundles").iterdir())
        cache = race(lambda: mlops_core.load("models:/iris/1", stack=stack).predict([1.0]), cached / "model.pkl",
                     root / "count-cache", root / "swap-cache", args.loads)
        stack.close()
    print(f"{'case':<14} {'loads':>6} {'loaded':>7} {'refused':>8} {'swaps':>7} {'hostile runs':>13}")
    for name, r in (("bundle folder", folder), ("models:/ cache", cache)):
        print(f"{name:<14} {r['loads']:>6} {r['loaded']:>7} {r['refused']:>8} {r['swaps']:>7} {r['hostile_runs']:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
