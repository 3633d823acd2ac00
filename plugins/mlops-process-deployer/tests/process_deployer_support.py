"""Helpers shared by the process deployer tests (a uniquely named module, so `import` finds this one)."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs

from mlops_core.testing.waiting import wait_until  # noqa: F401  (re-exported for the deployer tests)

MLOPS = str(Path(sys.executable).with_name("mlops"))
#: Inputs every test sends, and what each registered version answers for them.
ROWS = [[1.0, 2.0], [3.0, 4.0], [0.5, -0.5]]
ANSWERS = {1: [3.0, 7.0, 0.0], 2: [106.0, 114.0, 100.0]}


@attrs.define
class DeployEnv:
    """One isolated stack: its home, the versions registered in it, and helpers around them."""

    home: Path
    stack_file: Path
    env: dict[str, str]
    broken_version: int

    def cli(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run the real ``mlops`` console script in another process against this stack."""
        result = subprocess.run([MLOPS, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"mlops {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def server_pids(self) -> list[int]:
        """Live server processes started for this stack (their bundles live under its home)."""
        pids = []
        marker = str(self.home)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if b"mlops_server" in cmdline and any(marker.encode() in a for a in cmdline) \
                    and stat[stat.rfind(")") + 2] not in "ZX":
                pids.append(int(entry.name))
        return pids


def infer(url: str, model: str = "adder", rows: list[list[float]] = ROWS, timeout: float = 10) -> list[float]:
    """One V2 request on a new connection; the predictions (raises on anything but 200)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [len(rows), 2],
                                       "data": [v for r in rows for v in r]}]})
        conn.request("POST", f"/v2/models/{model}/infer", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, (response.status, data)
        return [round(v, 6) for v in json.loads(data)["outputs"][0]["data"]]
    finally:
        conn.close()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"
