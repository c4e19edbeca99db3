"""Per node of a cluster (``parley serve --redis``): where each room of a ``parley load``
run landed and how loaded each node was, from its own ``/healthz``.

The bots report the node they joined (the URL their websocket ended at, after any
``redirect``); the parent samples the ``/healthz`` of every node seen (and of the entry
URL) once a second in a thread (:class:`NodeSampler`); :func:`nodes_section` makes the
report's ``nodes`` list. Against a single server it is one node.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

#: seconds one /healthz request may take
HEALTHZ_TIMEOUT = 1.0
#: the counts of /healthz kept per sample (with ``load``, a cluster node's own figures)
KEPT = ("status", "rooms", "participants", "published_tracks", "forwarders", "load")


def http_url(url: str) -> str:
    """A node's base URL as ``http(s)://host:port`` (``ws://host:port/ws`` works too)."""
    if url.endswith("/ws"):
        url = url[: -len("/ws")]
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    return url.rstrip("/")


def fetch_healthz(url: str, authorization: str | None) -> dict[str, Any] | None:
    """``url``'s ``/healthz`` body (a draining node answers 503 with a body), or None."""
    request = urllib.request.Request(http_url(url) + "/healthz")
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=HEALTHZ_TIMEOUT) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    return {k: body[k] for k in KEPT if k in body}


class NodeSampler:
    """Samples every known node's ``/healthz`` once a second in a thread until
    :meth:`close`. ``authorization``: the header the counts need (an API secret)."""

    def __init__(self, authorization: str | None = None, interval: float = 1.0) -> None:
        self.authorization = authorization
        self.interval = interval
        #: node base URL -> [(time.monotonic(), body or None)]
        self.samples: dict[str, list[tuple[float, dict[str, Any] | None]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def see(self, urls: Iterable[str]) -> None:
        with self._lock:
            for url in urls:
                self.samples.setdefault(http_url(url), [])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="load-nodes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                urls = list(self.samples)
            for url in urls:
                body = fetch_healthz(url, self.authorization)
                with self._lock:
                    self.samples[url].append((time.monotonic(), body))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(HEALTHZ_TIMEOUT * 4)
            self._thread = None


def nodes_section(
    bots: list[dict[str, Any]],
    samples: dict[str, list[tuple[float, dict[str, Any] | None]]],
    start: float,
    end: float,
) -> list[dict[str, Any]]:
    """Per node: the rooms whose bots ended on it, how many bots, and its ``/healthz``
    at its busiest sample within ``[start, end]`` (most participants; the last answer
    before ``end`` when none falls within), with the peak and the answered samples."""
    urls = set(samples)
    for bot in bots:
        if bot.get("node"):
            urls.add(http_url(str(bot["node"])))
    out = []
    for url in sorted(urls):
        mine = [b for b in bots if b.get("node") and http_url(str(b["node"])) == url]
        first = [b for b in bots if (f := _first_node(b)) is not None and http_url(f) == url]
        answered = [(t, body) for t, body in samples.get(url, []) if body is not None]
        window = [(t, body) for t, body in answered if start <= t <= end]
        chosen = window or [(t, body) for t, body in answered if t <= end][-1:]
        busiest = max(chosen, key=lambda s: int(s[1].get("participants", 0)), default=None)
        out.append(
            {
                "url": url,
                "rooms": sorted({str(b["room"]) for b in mine if "room" in b}),
                # where the rooms were first placed (before any rejoin elsewhere)
                "first_rooms": sorted({str(b["room"]) for b in first if "room" in b}),
                "bots": len(mine),
                "healthz": busiest[1] if busiest is not None else None,
                "peak_participants": max(
                    (int(body.get("participants", 0)) for _, body in window), default=None
                ),
                "samples": len(answered),
            }
        )
    return out


def _first_node(bot: dict[str, Any]) -> str | None:
    """The node the bot first joined at: before its first rejoin, or where it is."""
    rejoins = bot.get("reconnects") or ()
    first = rejoins[0].get("node_before") if rejoins else bot.get("node")
    return None if first is None else str(first)


def nodes_table(nodes: list[dict[str, Any]]) -> str:
    """One line per node for the summary printed at the end."""
    lines = []
    for node in nodes:
        health = node["healthz"] or {}
        load = health.get("load") or {}
        cpu = f", cpu {load['cpu_percent']:.0f}%" if "cpu_percent" in load else ""
        lines.append(
            f"node {node['url']}: {len(node['rooms'])} room(s) "
            f"({len(node['first_rooms'])} first placed here), {node['bots']} bot(s), "
            f"peak {node['peak_participants'] if node['peak_participants'] is not None else '-'}"
            f" participant(s){cpu}"
        )
    return "\n".join(lines)


def reconnects_section(bots: list[dict[str, Any]]) -> dict[str, Any]:
    """Every bot's rejoins (``--reconnect``): how many, how many got back, and the time
    from the drop to media again (``media_after_ms``: p50 and max over the rejoins)."""
    rejoins = [r for b in bots for r in b.get("reconnects", ())]
    backs = sorted(float(r["media_after_ms"]) for r in rejoins if r["media_after_ms"] is not None)
    return {
        "count": len(rejoins),
        "bots": sum(bool(b.get("reconnects")) for b in bots),
        "recovered": sum(bool(r["recovered"]) for r in rejoins),
        "media_back": len(backs),
        "media_after_ms": {
            "p50": backs[(len(backs) - 1) // 2] if backs else None,
            "max": backs[-1] if backs else None,
        },
    }


def reconnects_line(section: dict[str, Any]) -> str:
    after = section["media_after_ms"]
    return (
        f"reconnects: {section['count']} by {section['bots']} bot(s), "
        f"{section['recovered']} rejoined, media back in {section['media_back']}: "
        f"p50 {after['p50']} ms, max {after['max']} ms"
    )
