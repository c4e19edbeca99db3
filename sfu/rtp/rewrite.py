"""Map successive input streams onto one continuous output stream (pure, no I/O).

A forwarder sends one outgoing SSRC per subscriber m-line. What feeds it changes:
the publisher restarts its stream, a simulcast layer is switched, a paused track
resumes. :class:`StreamRewriter` keeps the subscriber's view continuous: sequence
numbers go on from the last one sent, timestamps advance by the wall-clock time
that passed, and VP8 picture ids / TL0PICIDX continue.
"""

from __future__ import annotations

from ..native import RewriterCore
from ..seq import seq_diff

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class StreamRewriter(RewriterCore):
    """Its hot fields (sequence and timestamp offsets, the continuation point, the
    picture-id mapping) live in the base class, ``sfu.native.RewriterCore``, which
    the C fast path (``sfu/_native.c``) updates in place; the methods here are the
    reference for what that path does."""

    __slots__ = ("clock_rate", "history", "pid_base", "pid_history")

    def __init__(
        self,
        clock_rate: int,
        first_seq: int,
        first_ts: int,
        first_pid: int | None = 0,
        first_tl0: int | None = 0,
    ) -> None:
        self.clock_rate = clock_rate
        self.started = False
        self.in_ssrc = -1
        self.switch_in_seq = 0
        self.seq_offset = 0
        self.ts_offset = 0
        self.pid_offset = 0
        self.tl0_offset = 0
        self.pid_bits = 15
        self.in_pid_last = -1
        self.in_pid_ext = 0
        # The "previous packet" the first switch continues from.
        self.out_seq = (first_seq - 1) & _U16
        #: ``out_seq`` extended (it never wraps), to order the history entries.
        self.out_ext = self.out_seq
        #: output sequence numbers skipped (input lost before the SFU), less those
        #: filled later by a late packet: what a receiver counts lost that its own
        #: link did not lose
        self.skipped = 0
        self.out_ts = first_ts & _U32
        #: first_pid None: the first input keeps its picture ids and TL0PICIDX (no
        #: descriptor rewrite until an input switch needs one)
        self.keep_first = first_pid is None or first_tl0 is None
        self.out_pid = ((first_pid or 0) - 1) & 0x7FFF
        self.out_tl0 = ((first_tl0 or 0) - 1) & 0xFF
        self.out_time: float | None = None
        #: (first output seq extended like ``out_ext``, seq offset, input ssrc) of each
        #: mapping, newest last
        self.history: list[tuple[int, int, int]] = []
        #: the picture-id offset at the switch, and (first extended input picture id,
        #: offset) from each frame left out on (``skip_picture``), newest last: a
        #: retransmitted packet keeps the picture id it was first sent with
        self.pid_base = 0
        self.pid_history: list[tuple[int, int]] = []

    def continue_from(self, previous: StreamRewriter) -> None:
        """Continue the output stream ``previous`` wrote (an m-line reused for a new
        track keeps its SSRC): sequence numbers, timestamps, picture ids and TL0PICIDX go
        on from where it stopped, as after a switch. Call before the first ``switch``."""
        if self.started:
            raise RuntimeError("continue_from() must come before the first switch()")
        self.out_seq = previous.out_seq
        self.out_ext = previous.out_ext
        self.out_ts = previous.out_ts
        self.out_time = previous.out_time
        if previous.started:
            self.out_pid = previous.out_pid
            self.out_tl0 = previous.out_tl0
            self.keep_first = False

    def switch(
        self,
        in_ssrc: int,
        in_seq: int,
        in_ts: int,
        now: float,
        in_pid: int = -1,
        in_tl0: int = -1,
        pid_bits: int = 15,
    ) -> None:
        """Start mapping a new input stream whose first packet to forward is ``in_seq``."""
        self.seq_offset = (self.out_seq + 1 - in_seq) & _U16
        if self.out_time is None:
            gap = 0
        else:
            gap = max(1, round((now - self.out_time) * self.clock_rate))
        self.ts_offset = (self.out_ts + gap - in_ts) & _U32
        self.pid_bits = pid_bits or 15
        keep = self.keep_first and not self.started
        if in_pid >= 0:
            self.in_pid_last = in_pid
            self.in_pid_ext = in_pid
            self.pid_offset = 0 if keep else self.out_pid + 1 - in_pid
            self.pid_base = self.pid_offset
            self.pid_history = []
        if in_tl0 >= 0:
            self.tl0_offset = 0 if keep else (self.out_tl0 + 1 - in_tl0) & 0xFF
        self.in_ssrc = in_ssrc
        self.switch_in_seq = in_seq
        self.started = True
        self.history.append((self.out_ext + 1, self.seq_offset, in_ssrc))
        del self.history[:-64]

    def accepts(self, in_seq: int) -> bool:
        """False for packets of the current input that predate the switch.

        Once the input is far past the switch point the reference follows it, so it
        never ends up half the sequence space behind (where every packet looks older).
        """
        d = seq_diff(in_seq, self.switch_in_seq)
        if d < 0:
            return False
        if d > 0x4000:
            self.switch_in_seq = (in_seq - 0x2000) & _U16
        return True

    def seq(self, in_seq: int) -> int:
        """Output seq of ``in_seq`` (current input, accepted).

        A late packet keeps the number it had before a later drop() shifted the mapping.
        """
        out = (in_seq + self.seq_offset) & _U16
        if 0 < ((out - self.out_seq) & _U16) < 0x8000:
            return out  # newer than anything sent: the current mapping
        out_seq = self.out_seq
        out_ext = self.out_ext
        for first, offset, _ in reversed(self.history):
            mapped = (in_seq + offset) & _U16
            if out_ext + seq_diff(mapped, out_seq) >= first:
                return mapped
        return out

    def timestamp(self, in_ts: int) -> int:
        return (in_ts + self.ts_offset) & _U32

    def picture_id(self, in_pid: int) -> int:
        delta = seq_diff(in_pid, self.in_pid_last, self.pid_bits)
        if delta > 0:
            self.in_pid_last = in_pid
            self.in_pid_ext += delta
            return (self.in_pid_ext + self.pid_offset) & 0x7FFF
        ext = self.in_pid_ext + delta
        offset = self.pid_offset
        if self.pid_history and ext < self.pid_history[-1][0]:
            offset = next(
                (o for first, o in reversed(self.pid_history) if ext >= first), self.pid_base
            )
        return (ext + offset) & 0x7FFF

    def skip_picture(self, in_pid: int) -> None:
        """A frame of the current input (picture id ``in_pid``) is not forwarded (a
        temporal layer left out): the picture ids after it close up, so the receiver
        sees them contiguous. TL0PICIDX is untouched (TID 0 is never left out)."""
        delta = seq_diff(in_pid, self.in_pid_last, self.pid_bits)
        if delta <= 0:
            return  # a later packet of a frame already left out, or an old one
        self.in_pid_last = in_pid
        self.in_pid_ext += delta
        self.pid_offset -= 1
        self.pid_history.append((self.in_pid_ext + 1, self.pid_offset))
        del self.pid_history[:-64]

    def tl0picidx(self, in_tl0: int) -> int:
        return (in_tl0 + self.tl0_offset) & 0xFF

    def sent(
        self, out_seq: int, out_ts: int, now: float, out_pid: int = -1, out_tl0: int = -1
    ) -> None:
        """Record a packet as sent; only the newest one moves the continuation point."""
        d = seq_diff(out_seq, self.out_seq)
        if d > 1:
            self.skipped += d - 1
        elif d < 0:
            self.skipped -= 1
        if d > 0:
            self.out_seq = out_seq
            self.out_ext += d
            self.out_ts = out_ts
            self.out_time = now
            if out_pid >= 0:
                self.out_pid = out_pid
            if out_tl0 >= 0:
                self.out_tl0 = out_tl0

    def drop(self, in_seq: int) -> None:
        """An in-order input packet is not forwarded (padding): close the gap it leaves."""
        if self.started and (in_seq + self.seq_offset - self.out_seq) & _U16 == 1:
            self.seq_offset = (self.seq_offset - 1) & _U16
            self.history.append((self.out_ext + 1, self.seq_offset, self.in_ssrc))
            del self.history[:-64]

    def original(self, out_seq: int) -> tuple[int, int] | None:
        """(input ssrc, input seq) of a packet sent as ``out_seq``, for retransmission."""
        d = seq_diff(out_seq, self.out_seq)
        if d > 0:
            return None  # not sent yet
        ext = self.out_ext + d
        for first_out, offset, ssrc in reversed(self.history):
            if first_out <= ext:
                return ssrc, (out_seq - offset) & _U16
        return None
