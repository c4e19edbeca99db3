"""The ``parley`` command as a user meets it: help, bad options, a busy port (real runs)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from ._parley_process import parley_command


def _parley(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*parley_command(), *args], capture_output=True, text=True, timeout=timeout
    )


def _lists_the_commands(text: str) -> None:
    lines = text.splitlines()
    for command in ("serve", "bot", "load"):
        (line,) = [ln for ln in lines if ln.split()[:1] == [command]]
        assert len(line.split()) > 3, line  # the command and a description on one line


def test_help_lists_the_commands_one_line_each() -> None:
    run = _parley("--help")
    assert run.returncode == 0, run.stderr
    _lists_the_commands(run.stdout)
    assert "Traceback" not in run.stdout + run.stderr


def test_no_arguments_prints_the_help() -> None:
    run = _parley()
    assert run.returncode == 2
    _lists_the_commands(run.stderr)
    assert "parley COMMAND --help" in run.stderr, run.stderr


def test_unknown_command_is_an_argparse_error() -> None:
    run = _parley("srve")
    assert run.returncode == 2
    assert "invalid choice: 'srve'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_each_command_help_exits_0_without_format_escapes() -> None:
    for command in ("serve", "bot", "load"):
        run = _parley(command, "--help")
        assert run.returncode == 0, (command, run.stderr)
        assert "%%" not in run.stdout, (command, run.stdout)
        assert "Traceback" not in run.stdout + run.stderr


def test_bad_log_level_is_an_argparse_error() -> None:
    run = _parley("serve", "--port", "0", "--log-level", "nonsense")
    assert run.returncode == 2
    assert "argument --log-level: invalid choice: 'NONSENSE'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_bad_port_and_limit_are_argparse_errors() -> None:
    for args, message in (
        (("--port", "70000"), "port must be between 0 and 65535"),
        (("--port", "http"), "not a port number"),
        (("--max-message-bytes", "0"), "must be positive"),
    ):
        run = _parley("serve", *args)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr


def test_port_in_use_is_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _parley("serve", "--port", str(port), "--log-level", "warning")
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert run.stderr == f"parley serve: port {port} is in use; pass --port\n", run.stderr
    assert "Traceback" not in run.stdout


def test_unknown_host_is_one_clear_line() -> None:
    run = _parley("serve", "--port", "0", "--host", "no-such-host.invalid")
    assert run.returncode == 1, (run.returncode, run.stderr)
    (line,) = run.stderr.splitlines()
    assert line.startswith("parley serve: cannot listen on 'no-such-host.invalid'"), line
    assert line.endswith("pass --host"), line


def test_ctrl_c_while_starting_is_quiet() -> None:
    """Ctrl-C during start-up (imports, before the server listens) ends without a traceback."""
    proc = subprocess.Popen(
        [*parley_command(), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait until main() is importing the server (aiohttp's C parser is mapped), then press
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 30
    while "aiohttp/_http_parser" not in maps.read_text() and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), (proc.returncode, err)
    assert "Traceback" not in err, err
