"""``parley serve --config FILE`` and ``PARLEY_*`` variables, end to end (real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tomllib
from pathlib import Path

import aiohttp

from ._clients import Client
from ._parley_process import parley_command, parley_serve


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run(
        [*parley_command(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )


def test_print_config_shows_file_env_and_flags_in_their_order(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text(
        '[serve]\nport = 9000\nhost = "0.0.0.0"\nlog_format = "json"\n'
        'ice_server = ["turn:turn.example.net:3478?transport=udp,parley,secret"]\n'
        "drain_timeout = 30\n"
    )
    result = _run(
        ["serve", "--config", str(config), "--print-config", "--port", "9100"],
        {"PARLEY_HOST": "10.1.2.3", "PARLEY_DRAIN_TIMEOUT": "45"},
    )
    assert result.returncode == 0, result.stderr
    effective = tomllib.loads(result.stdout)["serve"]
    assert effective["port"] == 9100  # flag over file
    assert effective["host"] == "10.1.2.3"  # environment over file
    assert effective["drain_timeout"] == 45.0
    assert effective["log_format"] == "json"  # file over default
    assert effective["ice_server"] == ["turn:turn.example.net:3478?transport=udp,parley,secret"]
    assert effective["max_message_bytes"] == 262144  # default
    # what it printed is itself a config file giving the same options
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    second = _run(["serve", "--config", str(again), "--print-config"], {})
    assert second.returncode == 0, second.stderr
    assert tomllib.loads(second.stdout) == tomllib.loads(result.stdout)


def test_bad_key_or_value_is_refused_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text("[serve]\ndrain_timout = 30\n")
    result = _run(["serve", "--config", str(config)], {})
    assert result.returncode == 2
    assert f"{config}: unknown key 'drain_timout' in [serve]" in result.stderr
    result = _run(["serve"], {"PARLEY_PORT": "http"})
    assert result.returncode == 2
    assert "environment PARLEY_PORT: argument --port: not a port number: 'http'" in result.stderr


async def test_the_server_runs_with_the_file(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[serve]\nlog_format = "json"\n')
    async with parley_serve("--config", str(config)) as server, aiohttp.ClientSession() as http:
        client = await Client(http, server.url).connect()
        try:
            await client.join("cfg", "carol")
        finally:
            await client.close()
        async with asyncio.timeout(10):
            while not any('"event": "leave"' in line for line in server.stderr):
                await asyncio.sleep(0.05)
    joins = [json.loads(line) for line in server.stderr if '"event": "join"' in line]
    assert [(j["room"], j["name"]) for j in joins] == [("cfg", "carol")]


def test_parley_token_takes_key_secret_and_room_from_the_file(tmp_path: Path) -> None:
    """Shared top-level keys (the server's own key and secret) and the [token] table."""
    import jwt

    secret = "0123456789abcdef0123456789abcdef"
    config = tmp_path / "parley.toml"
    config.write_text(f'api_key = "k1"\napi_secret = "{secret}"\n[token]\nroom = "r1"\n')
    run = _run(["token", "--config", str(config), "--identity", "alice"], {})
    assert run.returncode == 0, run.stderr
    claims = jwt.decode(run.stdout.strip().splitlines()[-1], secret, algorithms=["HS256"])
    assert (claims["iss"], claims["room"], claims["sub"]) == ("k1", "r1", "alice")
    config.write_text('api_key = "k1"\n[token]\nnot_an_option = 1\n')
    run = _run(["token", "--config", str(config), "--identity", "alice"], {})
    assert run.returncode != 0 and "not_an_option" in run.stderr
