"""The helpers bench/ and loadgen/ share: /proc readers, the loopback namespace, the
server process (loadgen/procfs.py, loadgen/netns.py, loadgen/server_process.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from loadgen import procfs, server_process
from loadgen.netns import NETNS_MARK, only_loopback


def test_process_cpu_grows_with_work_and_rss_is_positive() -> None:
    before = procfs.process_cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    after = procfs.process_cpu_times(os.getpid())
    assert sum(after) >= before + 0.03
    assert 1.0 < procfs.process_rss_mb(os.getpid()) < 100_000


def test_machine_and_core_cpu() -> None:
    busy, total = procfs.machine_cpu()
    assert 0 <= busy <= total
    cores = procfs.core_busy()
    assert len(cores) >= 1
    assert all(0 <= b <= t for b, t in cores.values())


def test_udp_socket_shows_up_with_its_drops() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        inode = os.fstat(s.fileno()).st_ino
        assert inode in procfs.socket_inodes(os.getpid())
        assert procfs.udp_drops()[inode] == 0
    assert "InDatagrams" in procfs.udp_snmp()


def test_ensure_loopback_namespace_reexecs_into_one_with_only_lo(tmp_path: Path) -> None:
    code = (
        "import json, os, socket\n"
        "from loadgen.netns import ensure_loopback_namespace, NETNS_MARK\n"
        "ensure_loopback_namespace()\n"
        "print(json.dumps([[n for _, n in socket.if_nameindex()], os.environ.get(NETNS_MARK)]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != NETNS_MARK}
    if only_loopback():  # already in one (make test): the call must not re-exec
        expected_mark = None
    else:
        expected_mark = "1"
    script = tmp_path / "probe.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [["lo"], expected_mark]


def test_serve_command_and_a_server_that_answers() -> None:
    command = server_process.serve_command("127.0.0.1", 1234, ["127.0.0.1", "10.0.0.1"])
    assert command[1:4] == ["-m", "parley", "serve"]
    assert command.count("--ice-address") == 2
    proc, url = server_process.start_server("127.0.0.1", timeout=30)
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            assert json.loads(response.read())["status"] == "ok"
    finally:
        server_process.stop_server(proc)
    assert proc.returncode is not None


def test_waiting_for_a_server_that_exited_fails_at_once() -> None:
    port = server_process.free_port()
    started = time.monotonic()
    with pytest.raises(server_process.ServerStartError, match="exited"):
        server_process.wait_for_port("127.0.0.1", port, lambda: False, 10)
    with pytest.raises(server_process.ServerStartError, match="exited"):
        server_process.wait_for_healthz(f"http://127.0.0.1:{port}", lambda: False, 10)
    assert time.monotonic() - started < 2
