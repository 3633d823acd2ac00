"""Race harness: swap a bundle file back and forth while something loads it.

Used by the core's tests and by :class:`~mlops_core.testing.suites.FormatSuite` to
check that a format loads the bytes that were verified, not a file opened again
after the check. The swapper is a separate process (true parallelism, like an
attacker), replacing ``target`` by rename(2) in a tight loop with a good and a
bad copy of its bytes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from .waiting import wait_until

__all__ = ["FileSwapper", "hostile_pickle"]

_SWAPPER = r"""
import os, sys
target, good, bad, work = sys.argv[1:5]
stop = os.path.join(work, "stop")
started = os.path.join(work, "started")
i = swaps = 0
while not os.path.exists(stop):
    for src in (good, bad):
        tmp = os.path.join(work, f"swap-{i}")
        i += 1
        try:
            os.link(src, tmp)
            os.replace(tmp, target)
            swaps += 1
        except OSError:  # the folder is being repaired or replaced: try again
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if swaps and not os.path.exists(started):
        open(started, "w").close()
print(swaps)
"""


class _Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> Any:
        return (exec, (self.code,))


def hostile_pickle(counter: Path) -> bytes:
    """A pickle that, if ever unpickled, appends one byte to ``counter`` (so runs can be counted)."""
    return pickle.dumps(_Exec(f"open({str(counter)!r}, 'a').write('x')"), protocol=4)


class FileSwapper:
    """``with FileSwapper(target, good, bad, work): ...`` swaps ``target`` between two contents meanwhile.

    ``work`` must be on the same filesystem as ``target`` (renames). After the block,
    ``swaps`` is how many renames the swapper made.
    """

    def __init__(self, target: Path, good: bytes, bad: bytes, work: Path) -> None:
        self.target = Path(target)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "good").write_bytes(good)
        (self.work / "bad").write_bytes(bad)
        self.swaps = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> "FileSwapper":
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SWAPPER, str(self.target), str(self.work / "good"), str(self.work / "bad"),
             str(self.work)], stdout=subprocess.PIPE, text=True)
        # The race is on before the caller starts loading.
        wait_until((self.work / "started").exists, 120, "the swapper's first swap", interval=0.005, proc=self._proc)
        return self

    def __exit__(self, *exc: Any) -> None:
        (self.work / "stop").touch()
        assert self._proc is not None
        out, _ = self._proc.communicate(timeout=60)
        self.swaps = int(out.strip() or 0)
        for leftover in self.work.glob("swap-*"):
            leftover.unlink(missing_ok=True)
