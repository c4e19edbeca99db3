"""Every command-line option also from a TOML file and from ``PARLEY_*`` environment variables.

Generic over argparse: :func:`parse_args` walks the parser's actions, so an option added to
a command's parser is settable in the file and the environment with no code here.

- **File** (``--config PATH``, or ``PARLEY_CONFIG``; read with :mod:`tomllib`): a key is an
  option's ``dest`` (``--max-message-bytes`` -> ``max_message_bytes``). Keys in a table named
  after the command (``[serve]``, ``[bot]``, ``[load]``, ...) apply to that command; top-level
  keys are shared by every command that has that option (``api_key``, ``api_secret``, ...). A
  repeatable option (``action="append"``) takes an array; a flag a boolean, the value of its
  ``dest`` (``--no-publish``, dest ``publish``: ``publish = false``).
- **Environment**: ``PARLEY_<DEST>`` (``PARLEY_MAX_MESSAGE_BYTES``) for any command having the
  option, ``PARLEY_<COMMAND>_<DEST>`` (``PARLEY_SERVE_PORT``) for one command only (it wins
  over the generic name). A repeatable option takes whitespace-separated items (commas stay
  inside an item: ``turn:host:3478,user,pass``); a flag ``1/true/yes/on`` or ``0/false/no/off``.
- **Precedence**: command line > environment > file > the option's default. For a repeatable
  option the highest source replaces the lower ones (items are not merged).
- **Errors**: a key no command knows, or an unknown table, is an error naming the key and the
  file; a bad value gives argparse's own message, prefixed by the file or the variable.
- ``--print-config`` prints the effective options as a TOML table and exits 0; options whose
  name contains ``secret`` are printed as ``"<redacted>"``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Options this module adds itself, never read from a file or the environment.
OWN_DESTS = frozenset({"config", "print_config", "help"})
ENV_PREFIX = "PARLEY_"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
REDACTED = "<redacted>"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config PATH`` and ``--print-config`` (called by :func:`parse_args`)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="TOML file of options (keys are option names with _; see docs/operations.md); "
        "also PARLEY_CONFIG. Precedence: flag > PARLEY_* environment > file > default",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective options as TOML and exit",
    )


def _settable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options a file or the environment may set, by dest."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in OWN_DESTS:
            continue
        if action.dest == argparse.SUPPRESS:
            continue
        out[action.dest] = action
    return out


def _is_append(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction)


def _is_flag(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))


def _is_count(action: argparse.Action) -> bool:
    return isinstance(action, argparse._CountAction)


def _option_name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs or list(action.option_strings))[0]


@dataclass
class _Setting:
    """One option's value from the file or the environment, converted, with its raw text."""

    value: object
    raw: object
    source: str


class ConfigError(Exception):
    """A file or variable names an unknown option or gives a bad value (message says which)."""


def _convert_one(action: argparse.Action, text: str) -> object:
    """Like argparse's own conversion of one argument: type, then choices."""
    name = _option_name(action)
    converter = action.type
    if converter is None:
        value: object = text
    else:
        assert callable(converter)
        try:
            value = converter(text)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"argument {name}: {exc}") from None
        except (TypeError, ValueError):
            type_name = getattr(converter, "__name__", repr(converter))
            raise ConfigError(f"argument {name}: invalid {type_name} value: {text!r}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(repr, action.choices))
        raise ConfigError(f"argument {name}: invalid choice: {value!r} (choose from {choices})")
    return value


def _scalar_text(action: argparse.Action, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(
            f"argument {_option_name(action)}: expected a string or a number, "
            f"not {type(value).__name__}"
        )
    return str(value)


def _from_toml(action: argparse.Action, value: object) -> _Setting:
    """A TOML value for ``action``: an array for append, a boolean for a flag."""
    name = _option_name(action)
    if _is_flag(action):
        if not isinstance(value, bool):
            raise ConfigError(f"argument {name}: expected true or false, not {value!r}")
        return _Setting(value, value, "")  # the key is the dest: its value as it is
    if _is_count(action):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"argument {name}: expected a count (0, 1, 2 ...), not {value!r}")
        return _Setting(value, value, "")
    if _is_append(action):
        if not isinstance(value, list):
            raise ConfigError(f"argument {name}: expected an array, not {value!r}")
        texts = [_scalar_text(action, item) for item in value]
        return _Setting([_convert_one(action, t) for t in texts], texts, "")
    if not isinstance(action, argparse._StoreAction):
        raise ConfigError(f"argument {name}: cannot be set in a file")
    text = _scalar_text(action, value)
    return _Setting(_convert_one(action, text), value, "")


def _from_env(action: argparse.Action, text: str) -> _Setting:
    name = _option_name(action)
    if _is_flag(action):
        word = text.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"argument {name}: expected 1/true/yes/on or 0/false/no/off")
        on = word in TRUE_WORDS
        return _Setting(on, on, "")
    if _is_count(action):
        try:
            count = int(text)
        except ValueError:
            raise ConfigError(f"argument {name}: invalid int value: {text!r}") from None
        return _Setting(count, count, "")
    if _is_append(action):
        items = text.split()
        return _Setting([_convert_one(action, t) for t in items], items, "")
    if not isinstance(action, argparse._StoreAction):
        raise ConfigError(f"argument {name}: cannot be set in the environment")
    return _Setting(_convert_one(action, text), text, "")


def _read_file(path: str) -> dict[str, object]:
    try:
        with Path(path).open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def file_settings(
    actions: Mapping[str, argparse.Action],
    data: Mapping[str, object],
    path: str,
    section: str,
    sections: Iterable[str],
    other_dests: Callable[[], set[str]],
) -> dict[str, _Setting]:
    """The settings for one command from a parsed TOML document.

    ``sections`` are the command names (tables allowed at top level); ``other_dests`` the
    option names of every command (a top-level key none of them has is an error).
    """
    known_sections = set(sections) | {section}
    out: dict[str, _Setting] = {}
    shared = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for key, value in data.items():
        if isinstance(value, dict) and key not in known_sections:
            raise ConfigError(
                f"{path}: unknown table [{key}] (tables: "
                + ", ".join(f"[{s}]" for s in sorted(known_sections))
                + ")"
            )
    own = data.get(section, {})
    assert isinstance(own, dict)
    for key in own:
        if key not in actions:
            raise ConfigError(f"{path}: unknown key {key!r} in [{section}]{_hint(key, actions)}")
    for key in shared:
        if key not in actions and key not in other_dests():
            raise ConfigError(f"{path}: unknown key {key!r}{_hint(key, actions)}")
    for key, value in [*shared.items(), *own.items()]:  # the command's table wins
        if key not in actions:
            continue
        where = f"[{section}] {key}" if key in own else key
        try:
            setting = _from_toml(actions[key], value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {where}: {exc}") from None
        setting.source = f"{path}: {where}"
        out[key] = setting
    return out


def _hint(key: str, actions: Mapping[str, argparse.Action]) -> str:
    dashed = key.replace("-", "_")
    if dashed in actions:
        return f" (did you mean {dashed!r}? keys use _ where options use -)"
    return ""


def env_settings(
    actions: Mapping[str, argparse.Action], env: Mapping[str, str], section: str
) -> dict[str, _Setting]:
    """Settings from ``PARLEY_<DEST>`` and ``PARLEY_<SECTION>_<DEST>``."""
    out: dict[str, _Setting] = {}
    for dest, action in actions.items():
        for var in (f"{ENV_PREFIX}{dest.upper()}", f"{ENV_PREFIX}{section.upper()}_{dest.upper()}"):
            if var not in env:
                continue
            try:
                setting = _from_env(action, env[var])
            except ConfigError as exc:
                raise ConfigError(f"environment {var}: {exc}") from None
            setting.source = f"environment {var}"
            out[dest] = setting
    return out


@dataclass
class _RawRecorder:
    """Wraps each option's ``type`` to remember the command line's text for ``--print-config``."""

    raw: dict[str, list[str]] = field(default_factory=dict)

    def wrap(self, action: argparse.Action) -> None:
        original = action.type
        if original is None or not callable(original):
            return
        dest = action.dest

        def convert(text: str) -> object:
            value = original(text)
            self.raw.setdefault(dest, []).append(text)
            return value

        convert.__name__ = getattr(original, "__name__", "value")
        action.type = convert


def parse_args(
    parser: argparse.ArgumentParser,
    argv: list[str],
    *,
    section: str,
    sections: Iterable[str] = (),
    other_dests: Callable[[], set[str]] = set,
    env: Mapping[str, str] | None = None,
    out: Callable[[str], None] | None = None,
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the file and environment layers under the flags.

    Adds ``--config`` and ``--print-config`` to ``parser``. Exits like argparse (status 2)
    on a bad file, key or value; exits 0 after ``--print-config``.
    """
    env = os.environ if env is None else env
    add_config_arguments(parser)
    actions = _settable(parser)
    # first pass: only to find --config (errors are reported by the full parse below)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    path = known.config or env.get(f"{ENV_PREFIX}CONFIG") or None
    settings: dict[str, _Setting] = {}
    try:
        if path:
            settings.update(
                file_settings(actions, _read_file(path), path, section, sections, other_dests)
            )
        settings.update(env_settings(actions, env, section))
    except ConfigError as exc:
        parser.error(str(exc))
    for dest, setting in settings.items():
        action = actions[dest]
        if action.required:
            action.required = False  # the file or environment gave it
        if not _is_append(action):
            # (argparse runs the type again on a str default: the types here are idempotent)
            parser.set_defaults(**{dest: setting.value})
    recorder = _RawRecorder()
    for action in actions.values():
        recorder.wrap(action)
    args = parser.parse_args(argv)
    for dest, setting in settings.items():
        action = actions[dest]
        # a repeatable option the command line did not give keeps its default object
        if _is_append(action) and getattr(args, dest) is action.default:
            setattr(args, dest, setting.value)
    if args.print_config:
        raw: dict[str, object] = {d: s.raw for d, s in settings.items()}
        for dest, texts in recorder.raw.items():
            raw[dest] = texts if _is_append(actions[dest]) else texts[-1]
        (out or (lambda s: print(s, end="")))(render_toml(section, actions, args, raw))
        sys.exit(0)
    return args


def _toml_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v) for v in value]
        if any(i is None for i in items):
            return None
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    return None


def _plain(value: object) -> bool:
    """A TOML scalar, or a list of them: what a config file gives (not a parsed object)."""
    scalars = (str, int, float, bool)
    return isinstance(value, scalars) or (
        isinstance(value, list) and all(isinstance(v, scalars) for v in value)
    )


def render_toml(
    section: str,
    actions: Mapping[str, argparse.Action],
    args: argparse.Namespace,
    raw: Mapping[str, object],
) -> str:
    """The effective options of one command as a ``[section]`` table (a valid config file)."""
    lines = [f"[{section}]"]
    for dest in sorted(actions):
        value = getattr(args, dest, None)
        if "secret" in dest and value is not None:
            lines.append(f"{dest} = {_toml_value(REDACTED)}")
            continue
        if value is None:
            lines.append(f"# {dest} is not set")
            continue
        text = _toml_value(value) if _plain(value) else None
        if text is None and dest in raw:  # a converted object (e.g. an ICE server): its text
            text = _toml_value(raw[dest])
        if text is None:
            text = _toml_value(str(value))
        lines.append(f"{dest} = {text}")
    return "\n".join(lines) + "\n"
