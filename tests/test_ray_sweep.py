"""`sdfl sweep --ray` on a real local Ray cluster: a head and a worker node started with `ray
start`, each offering one cell slot; four simulated cells run as Ray tasks on them, their folders
come back into the sweep's, and results.csv is the serial sweep's. What is simulated: both Ray
"machines" are processes of this machine (their own raylets and object stores); the cells are
`sdfl simulate` runs, so no root is needed and the figures are deterministic (testbed cells on
the same cluster: README)."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SWEEP = """
scenario = "{root}/scenarios/paper.toml"
[set]
dfl.rounds = 6
network.hosts_per_domain = 2
attacks = [{{ kind = "sign-flip", fraction = 0.25, start_round = 3, scale = 4.0 }}]
[axes.defense]
none = {{ defense.fuhst = false }}
fuhst = {{ defense.fuhst = true }}
[axes.seed]
0 = {{ seed = 0 }}
1 = {{ seed = 1 }}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A head and a worker node, each with one sdfl_slot; stopped (and their processes) after."""
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed under CI=true: bash scripts/install.sh --cluster")
        pytest.skip("Ray is not installed (bash scripts/install.sh --cluster)")
    ray = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--resources", '{"sdfl_slot": 1}', "--disable-usage-stats", "--block"]
    nodes = [subprocess.Popen([ray, "start", "--head", "--port", str(port), "--temp-dir", temp,
                               "--include-dashboard", "false", *common], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([ray, "status", "--address", f"127.0.0.1:{port}"], env=env,
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and nodes[0].poll() is None, "the Ray head did not start"
            time.sleep(1)
        nodes.append(subprocess.Popen([ray, "start", "--address", f"127.0.0.1:{port}", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        count = (f"import ray; ray.init(address='127.0.0.1:{port}', logging_level='ERROR'); "
                 "print(sum(node['Alive'] for node in ray.nodes()))")
        while subprocess.run([sys.executable, "-c", count], env=env, capture_output=True,
                             text=True).stdout.strip() != "2":
            assert time.monotonic() < deadline and nodes[1].poll() is None, "the Ray worker did not join"
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):  # --block: SIGTERM stops the node and the processes it started
            os.killpg(node.pid, 15)
        for node in nodes:
            node.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def test_a_sweep_on_a_two_node_ray_cluster_completes_every_cell_as_the_serial_sweep_does(tmp_path, ray_cluster):
    sweep = tmp_path / "tiny.toml"
    sweep.write_text(SWEEP.format(root=ROOT))
    sdfl = [sys.executable, "-m", "sdfl", "sweep", str(sweep), "--simulate"]
    on_ray = subprocess.run([*sdfl, "--ray", ray_cluster, "--out", str(tmp_path / "ray")],
                            capture_output=True, text=True, timeout=600)
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    assert "2 nodes, 2 cell slots" in on_ray.stdout
    serial = subprocess.run([*sdfl, "--jobs", "1", "--out", str(tmp_path / "serial")], capture_output=True,
                            text=True, timeout=600)
    assert serial.returncode == 0, serial.stdout + serial.stderr
    rows = _rows(tmp_path / "ray" / "results.csv")
    assert len(rows) == 4 and all(r["complete"] == "True" for r in rows)
    assert rows == _rows(tmp_path / "serial" / "results.csv")
    for row in rows:  # each cell's folder came back whole
        folder = tmp_path / "ray" / row["folder"]
        assert (folder / "summary.json").is_file() and (folder / "report.md").is_file()
