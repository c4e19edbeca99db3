"""The config file and ``PARLEY_*`` variables under every option (``parley/config_file.py``)."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from parley.cli import build_serve_parser
from parley.config_file import parse_args


def _parser() -> argparse.ArgumentParser:
    """A parser like the ones other modules add options to: store, append, flag, choices."""
    parser = argparse.ArgumentParser(prog="parley test")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--allowed-origin", action="append", default=None)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-publish", dest="publish", action="store_false")
    parser.add_argument("--mode", choices=("a", "b"), default="a")
    parser.add_argument("--api-secret", default=None)
    parser.add_argument("--room", required=True)
    return parser


def _parse(
    argv: list[str], env: dict[str, str] | None = None, *, section: str = "serve"
) -> argparse.Namespace:
    return parse_args(
        _parser(),
        argv,
        section=section,
        sections=("serve", "bot"),
        other_dests=lambda: {"duration"},
        env=env or {},
    )


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "parley.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file_or_environment() -> None:
    args = _parse(["--room", "r"])
    assert (args.port, args.host, args.allowed_origin, args.verbose, args.publish) == (
        8080,
        "127.0.0.1",
        None,
        False,
        True,
    )


def test_file_sets_every_kind_of_option(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'room = "common"\n[serve]\nport = 9000\nallowed_origin = ["https://a", "https://b"]\n'
        'verbose = true\npublish = false\nmode = "b"\n',
    )
    args = _parse(["--config", path])  # --room is required: the file's shared key gives it
    assert args.port == 9000
    assert args.allowed_origin == ["https://a", "https://b"]
    assert args.verbose is True and args.publish is False
    assert args.mode == "b" and args.room == "common"


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = _write(tmp_path, '[serve]\nport = 9000\nhost = "10.0.0.1"\nallowed_origin = ["f"]\n')
    env = {"PARLEY_PORT": "9001", "PARLEY_ALLOWED_ORIGIN": "e1 e2", "PARLEY_ROOM": "r"}
    args = _parse(["--config", path], env)
    assert (args.port, args.host, args.allowed_origin) == (9001, "10.0.0.1", ["e1", "e2"])
    args = _parse(["--config", path, "--port", "50", "--allowed-origin", "c"], env)
    # a flag wins, and a repeated option from a higher source replaces (not extends) a lower
    assert (args.port, args.allowed_origin) == (50, ["c"])
    # the command's own variable wins over the generic one
    args = _parse(["--config", path], {**env, "PARLEY_SERVE_PORT": "9002"})
    assert args.port == 9002


def test_config_path_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[serve]\nport = 9100\n")
    assert _parse(["--room", "r"], {"PARLEY_CONFIG": path}).port == 9100


def test_flags_from_the_environment() -> None:
    args = _parse([], {"PARLEY_VERBOSE": "yes", "PARLEY_PUBLISH": "0", "PARLEY_ROOM": "r"})
    assert args.verbose is True and args.publish is False


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]) -> str:
    with pytest.raises(SystemExit) as exc:
        _parse(argv, env)
    assert exc.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_errors_name_the_key_file_or_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "[serve]\nprot = 1\n")
    err = _error(capsys, ["--config", path, "--room", "r"], {})
    assert err == f"parley test: error: {path}: unknown key 'prot' in [serve]"
    path = _write(tmp_path, "porrt = 1\n")
    assert "unknown key 'porrt'" in _error(capsys, ["--config", path, "--room", "r"], {})
    # a shared key another command knows is fine; a table no command has is not
    path = _write(tmp_path, "duration = 3\n[srve]\nport = 1\n")
    assert "unknown table [srve]" in _error(capsys, ["--config", path, "--room", "r"], {})
    path = _write(tmp_path, '[serve]\nport = "x"\n')
    assert _error(capsys, ["--config", path, "--room", "r"], {}).endswith(
        f"{path}: [serve] port: argument --port: invalid int value: 'x'"
    )
    path = _write(tmp_path, '[serve]\nmode = "c"\n')
    assert "argument --mode: invalid choice: 'c'" in _error(capsys, ["--config", path], {})
    path = _write(tmp_path, '[serve]\nallowed_origin = "x"\n')
    assert "expected an array" in _error(capsys, ["--config", path], {})
    path = _write(tmp_path, "[serve\n")
    assert "not valid TOML" in _error(capsys, ["--config", path], {})
    err = _error(capsys, ["--room", "r"], {"PARLEY_PORT": "eighty"})
    assert err.endswith("environment PARLEY_PORT: argument --port: invalid int value: 'eighty'")
    err = _error(capsys, ["--room", "r", "--config", str(tmp_path / "missing.toml")], {})
    assert "cannot read" in err and "missing.toml" in err


def test_print_config_is_a_config_file_of_the_effective_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, '[serve]\nport = 9000\napi_secret = "s3cret"\nroom = "r"\n')
    with pytest.raises(SystemExit) as exc:
        _parse(["--config", path, "--print-config", "--allowed-origin", "o"], {})
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    assert "s3cret" not in printed
    data = tomllib.loads(printed)["serve"]
    assert data["port"] == 9000 and data["allowed_origin"] == ["o"] and data["room"] == "r"
    assert data["api_secret"] == "<redacted>"


def test_serve_parser_options_all_settable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every option of the real ``parley serve``, ICE servers as their text."""
    path = _write(
        tmp_path,
        '[serve]\nice_server = ["turn:turn.example:3478?transport=udp,u,p"]\n'
        'ice_address = ["10.0.0.5"]\nlog_level = "debug"\ndrain_timeout = 30\n',
    )
    args = parse_args(build_serve_parser(), ["--config", path], section="serve", env={})
    assert args.ice_server[0].urls == ("turn:turn.example:3478?transport=udp",)
    assert args.ice_server[0].username == "u" and args.ice_address == ["10.0.0.5"]
    assert args.log_level == "DEBUG" and args.drain_timeout == 30.0
    with pytest.raises(SystemExit):
        parse_args(
            build_serve_parser(), ["--config", path, "--print-config"], section="serve", env={}
        )
    data = tomllib.loads(capsys.readouterr().out)["serve"]
    assert data["ice_server"] == ["turn:turn.example:3478?transport=udp,u,p"]
    assert data["drain_timeout"] == 30.0


def test_the_documented_config_files_are_valid(tmp_path: Path) -> None:
    """Every ``toml`` example in docs/operations.md is a file ``parley serve`` accepts."""
    import re

    doc = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        path = tmp_path / "example.toml"
        path.write_text(block)
        args = parse_args(build_serve_parser(), ["--config", str(path)], section="serve", env={})
        assert args.port == 8080
