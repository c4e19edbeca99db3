"""Active speaker detection from the audio-level header extension (pure, time passed in).

Publishers put each audio packet's level in the ssrc-audio-level extension (RFC 6464:
0 to 127 in -dBov, 127 being silence). Every ``interval`` the room hands the detector
each participant's mean *loudness* (127 - level) over that interval; the detector keeps
a smoothed score per participant and names the loudest as the active speaker once it
has been the loudest, above ``threshold``, for ``switch_delay`` seconds and the current
speaker has had the floor for at least ``min_hold``. Silence does not clear the active
speaker (the last one keeps the floor, as meeting UIs expect); leaving does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Loudness is 127 - level: 0 is silence, 127 is 0 dBov.
SILENCE = 0.0


@dataclass(frozen=True, slots=True)
class SpeakerSettings:
    #: loudness (127 - -dBov) a speaker must reach: 67 is -60 dBov
    threshold: float = 67.0
    #: a challenger must be louder than the current speaker by this much
    margin: float = 6.0
    #: ... for this long (s)
    switch_delay: float = 0.6
    #: the floor is held at least this long (s)
    min_hold: float = 1.5
    #: weight of the newest sample in the smoothed score
    smoothing: float = 0.5


class ActiveSpeakerDetector:
    def __init__(self, settings: SpeakerSettings | None = None) -> None:
        self.settings = settings or SpeakerSettings()
        self.scores: dict[str, float] = {}
        self.current: str | None = None
        self._changed_at: float | None = None
        self._challenger: str | None = None
        self._challenger_since = 0.0

    def update(self, loudness: Mapping[str, float | None], now: float) -> bool:
        """Feed one interval's mean loudness per participant (None: no audio packets).

        Participants absent from ``loudness`` are forgotten. Returns True when
        ``current`` changed.
        """
        s = self.settings
        for key in [k for k in self.scores if k not in loudness]:
            del self.scores[key]
        for key, value in loudness.items():
            sample = SILENCE if value is None else value
            old = self.scores.get(key)
            self.scores[key] = sample if old is None else old + s.smoothing * (sample - old)
        if self.current is not None and self.current not in self.scores:
            self.current = None
            self._changed_at = now
            self._challenger = None
            return True
        if not self.scores:
            return False
        loudest = max(self.scores, key=lambda k: self.scores[k])
        score = self.scores[loudest]
        if loudest == self.current or score < s.threshold:
            self._challenger = None
            return False
        if self.current is not None and score < self.scores[self.current] + s.margin:
            self._challenger = None
            return False
        if self._challenger != loudest:
            self._challenger, self._challenger_since = loudest, now
        if now - self._challenger_since < s.switch_delay and self.current is not None:
            return False
        if self._changed_at is not None and now - self._changed_at < s.min_hold:
            return False
        self.current = loudest
        self._changed_at = now
        self._challenger = None
        return True
