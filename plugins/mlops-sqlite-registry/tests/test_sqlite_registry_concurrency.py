"""Concurrent writers in several processes: versions numbered 1..n, no gap, no duplicate, no error."""

from __future__ import annotations

import multiprocessing
import os
import traceback

from mlops_core.entities import ArtifactRef
from mlops_sqlite_registry.registry import SqliteRegistry

PROCESSES = 8
VERSIONS_EACH = 200


def register_versions(path: str, count: int, worker: int, ready, start, results) -> None:
    """Run in a child process: register ``count`` versions of one shared model, report them."""
    try:
        registry = SqliteRegistry(path)
        registry.check()  # open (and maybe migrate) before the race starts
        ready.put(worker)
        start.wait()
        numbers = []
        for i in range(count):
            artifact = ArtifactRef(uri="file:///store", digest=f"sha256:{worker:032x}{i:032x}")
            numbers.append(registry.create_version("shared", artifact, tags={"worker": str(worker)}).version)
        registry.close()
        results.put((worker, os.getpid(), numbers, None))
    except BaseException:  # reported to the test, which fails on it
        ready.put(worker)
        results.put((worker, os.getpid(), [], traceback.format_exc()))


def test_eight_processes_register_1600_versions_without_gaps_or_duplicates(tmp_path):
    path = str(tmp_path / "registry.db")
    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=register_versions, args=(path, VERSIONS_EACH, w, ready, start, results))
        for w in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every writer is connected before any writes: a real race
        ready.get(timeout=120)
    start.set()
    reports = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r[3] for r in reports if r[3]] == []  # no error surfaced in any writer
    assert all(p.exitcode == 0 for p in procs)
    assert len({pid for _, pid, _, _ in reports}) == PROCESSES

    total = PROCESSES * VERSIONS_EACH
    numbers = sorted(n for _, _, chunk, _ in reports for n in chunk)
    assert numbers == list(range(1, total + 1))
    for _, _, chunk, _ in reports:  # each writer saw its own versions in increasing order
        assert chunk == sorted(chunk) and len(chunk) == VERSIONS_EACH

    registry = SqliteRegistry(path)
    assert registry.get_model("shared").latest_version == total
    stored, token = [], None
    while True:
        page = registry.search_versions("shared", page_size=500, page_token=token)
        stored += [(v.version, int(v.tags["worker"]), v.artifact.digest) for v in page.items]
        token = page.next_token
        if token is None:
            break
    assert [v for v, _, _ in stored] == list(range(total, 0, -1))
    # each stored version holds the artifact of the writer that was handed its number
    owner = {n: worker for worker, _, chunk, _ in reports for n in chunk}
    assert all(owner[v] == worker for v, worker, _ in stored)
    assert len({digest for _, _, digest in stored}) == total
    registry.close()
