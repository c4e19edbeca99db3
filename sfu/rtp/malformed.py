"""Malformed packets from one peer: dropped where they are parsed, counted, logged rarely.

A peer that sends malformed RTP or RTCP (a header-extension element that overruns its
block, a bad padding length, a truncated VP8 descriptor, an RTCP length past the end,
...) must cost the server neither a traceback per packet nor its log. Each drop is
counted here by reason; at most one log line per ``interval`` seconds says how many
were dropped since the last line and the last reason. Time is passed in.
"""

from __future__ import annotations

import logging

#: Distinct reasons kept per peer; further ones are counted under OTHER.
MAX_REASONS = 16
OTHER = "other"


class MalformedLog:
    """Counts of dropped packets by ``(kind, reason)`` for one peer (``kind``: "rtp" or
    "rtcp"), and the rate-limited log line about them."""

    def __init__(self, who: str, interval: float, logger: logging.Logger) -> None:
        self.who = who
        self.interval = interval
        self._logger = logger
        #: every drop so far, by (kind, reason)
        self.by_reason: dict[tuple[str, str], int] = {}
        self.totals = {"rtp": 0, "rtcp": 0}
        self.last_reason: tuple[str, str] | None = None
        #: drops not yet reported in a log line, by kind
        self._pending = {"rtp": 0, "rtcp": 0}
        self._logged_at: float | None = None
        #: log lines written
        self.lines = 0

    def add(self, kind: str, reason: str, now: float) -> None:
        """One packet of ``kind`` dropped for ``reason``; logs if the interval allows."""
        key = (kind, reason)
        if key not in self.by_reason and len(self.by_reason) >= MAX_REASONS:
            key = (kind, OTHER)
        self.by_reason[key] = self.by_reason.get(key, 0) + 1
        self.totals[kind] = self.totals.get(kind, 0) + 1
        self._pending[kind] = self._pending.get(kind, 0) + 1
        self.last_reason = key
        if self._logged_at is None or now - self._logged_at >= self.interval:
            self._log(now)

    def flush(self, now: float, force: bool = False) -> None:
        """Log what is pending once the interval has passed (or now, when ``force``)."""
        if not any(self._pending.values()):
            return
        if force or self._logged_at is None or now - self._logged_at >= self.interval:
            self._log(now)

    def _log(self, now: float) -> None:
        rtp, rtcp = self._pending.get("rtp", 0), self._pending.get("rtcp", 0)
        since = "" if self._logged_at is None else f" in the last {now - self._logged_at:.0f} s"
        kind, reason = self.last_reason or ("", "")
        self._logger.warning(
            "%s: dropped %d malformed RTP and %d malformed RTCP packets%s"
            " (%d and %d in all); last: %s %s",
            self.who,
            rtp,
            rtcp,
            since,
            self.totals["rtp"],
            self.totals["rtcp"],
            kind.upper(),
            reason,
        )
        self._pending = {"rtp": 0, "rtcp": 0}
        self._logged_at = now
        self.lines += 1

    def to_json(self) -> dict[str, object]:
        return {
            "rtp": self.totals["rtp"],
            "rtcp": self.totals["rtcp"],
            "by_reason": {f"{k}: {r}": n for (k, r), n in sorted(self.by_reason.items())},
        }
