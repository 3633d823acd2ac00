"""Compile a layer's Python sources to bytecode at build time, reproducibly (issue 14.7).

Without ``.pyc`` files a container compiles every module it imports on each start
(sklearn and scipy: seconds), and cannot even keep the result, since the image is
read-only to its non-root user. The builder therefore adds
``__pycache__/<module>.<cache tag>.pyc`` next to every ``.py`` of the deps and
runtime layers:

* ``unchecked-hash`` pycs (PEP 552): Python loads them without looking at the
  source's mtime or hash, and they carry no timestamp, so the bytes depend on the
  source alone;
* compiled in a fresh interpreter with ``PYTHONHASHSEED=0`` (set and frozenset
  constants are marshalled in hash order), files in sorted order, each code object
  dropped before the next (marshal's back-references depend on reference counts);
* the recorded file name is the path inside the image, not the build machine's.

Bytecode is only valid for the Python minor version that wrote it, so the builder
compiles only when its own Python has the image's MAJOR.MINOR, and says so
otherwise. The pycs also depend on the compiler's exact release, which is part of
the layer cache key.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys

from .layers import FileTree

__all__ = ["compile_tree", "can_compile_for", "COMPILER_ID"]

log = logging.getLogger("mlops_oci")

#: Identifies the compiler in cache keys: a different Python release may write different bytecode.
COMPILER_ID = f"{sys.implementation.cache_tag}-{sys.version.split()[0]}"

_WORKER = r"""
import importlib._bootstrap_external as ext, importlib.util, marshal, pickle, sys
jobs = pickle.load(sys.stdin.buffer)
out = []
for dfile, source in jobs:
    try:
        code = compile(source, dfile, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        out.append(None)   # e.g. a Python 2 file a wheel ships as data: Python compiles nothing either
        continue
    data = bytes(ext._code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))
    del code
    out.append(data)
pickle.dump(out, sys.stdout.buffer, protocol=4)
"""


def can_compile_for(python_version: str) -> bool:
    return python_version == f"{sys.version_info.major}.{sys.version_info.minor}"


def compile_tree(tree: FileTree, python_version: str, *, batch: int = 400) -> int:
    """Add an unchecked-hash ``.pyc`` for every ``.py`` in ``tree``; returns how many were added."""
    if not can_compile_for(python_version):
        log.warning("not compiling bytecode: this build runs Python %d.%d, the image has Python %s "
                    "(build with Python %s to get faster container starts)",
                    sys.version_info.major, sys.version_info.minor, python_version, python_version)
        return 0
    tag = sys.implementation.cache_tag
    entries = {e.path: e for e in tree.entries()}
    sources = [e for e in entries.values() if e.kind == "file" and e.path.endswith(".py")]
    added = 0
    for start in range(0, len(sources), batch):
        jobs = []
        for e in sources[start:start + batch]:
            assert e.opener is not None
            with e.opener() as f:
                jobs.append(("/" + e.path, f.read()))
        done = subprocess.run([sys.executable, "-I", "-c", _WORKER], input=pickle.dumps(jobs, protocol=4),
                              capture_output=True, env={"PYTHONHASHSEED": "0"}, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the bytecode compiler failed: {done.stderr.decode(errors='replace')[-800:]}")
        for (dfile, _), pyc in zip(jobs, pickle.loads(done.stdout)):
            if pyc is None:
                continue
            folder, _, name = dfile[1:].rpartition("/")
            target = f"{folder}/__pycache__/{name[:-3]}.{tag}.pyc" if folder else f"__pycache__/{name[:-3]}.{tag}.pyc"
            if target not in entries:
                tree.add_bytes(target, pyc)
                added += 1
    return added
