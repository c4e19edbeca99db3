"""The bot's packet-level loss count (``loadgen.bot.participant.PacketLoss``): pure, seconds passed in."""

from __future__ import annotations

import random

from loadgen.bot import PacketLoss


def test_holes_are_counted_in_the_second_they_appear() -> None:
    loss = PacketLoss()
    for seq in (10, 11, 14, 15):
        loss.on_packet(1, seq, 0)
    loss.on_packet(1, 17, 1)
    assert (loss.received, loss.missing) == (5, 3)
    assert loss.missing_per_second == [2, 1]
    assert loss.received_per_second == [4, 1]


def test_duplicates_count_once() -> None:
    loss = PacketLoss()
    for seq in (1, 1, 2, 3, 3, 2, 4):
        loss.on_packet(7, seq, 0)
    assert (loss.received, loss.missing) == (4, 0)


def test_a_late_packet_fills_its_hole_in_the_second_it_was_counted() -> None:
    loss = PacketLoss()
    for seq in (1, 2, 4, 5):
        loss.on_packet(7, seq, 0)
    loss.on_packet(7, 3, 2)  # reordered: arrives two seconds later
    assert loss.missing == 0 and loss.missing_per_second == [0]
    assert loss.received_per_second == [4, 0, 1]
    loss.on_packet(7, 3, 2)  # and its duplicate is nothing
    assert loss.received == 5


def test_sequence_wraparound() -> None:
    loss = PacketLoss()
    for seq in (65533, 65534, 1, 2):  # 65535 and 0 lost
        loss.on_packet(7, seq, 0)
    assert loss.missing == 2
    loss.on_packet(7, 0, 0)  # late
    assert loss.missing == 1


def test_a_new_ssrc_or_a_large_jump_is_a_new_stream() -> None:
    loss = PacketLoss()
    loss.on_packet(7, 100, 0)
    loss.on_packet(8, 5000, 0)
    loss.on_packet(8, 5001 + 4000, 0)
    assert loss.missing == 0 and loss.received == 3


def test_holes_older_than_the_horizon_are_final() -> None:
    loss = PacketLoss(horizon=10)
    loss.on_packet(7, 0, 0)
    loss.on_packet(7, 2, 0)  # 1 missing
    for seq in range(3, 20):
        loss.on_packet(7, seq, 0)
    loss.on_packet(7, 1, 0)  # too late to count
    assert loss.missing == 1 and loss.received == 19


def test_random_loss_and_duplication_is_measured_exactly() -> None:
    rng = random.Random(5)
    loss = PacketLoss()
    sent = list(range(60000, 60000 + 3000))
    arrived = [s & 0xFFFF for s in sent if rng.random() > 0.05]
    lost = len(sent) - len(arrived)
    stream = [s for s in arrived for _ in range(2)]  # every packet twice
    for i in range(0, len(stream) - 1, 7):  # and some neighbours swapped
        stream[i], stream[i + 1] = stream[i + 1], stream[i]
    # the first and last packets arrive (the count is between them)
    stream = [60000, *stream, (60000 + 2999) & 0xFFFF]
    for seq in stream:
        loss.on_packet(7, seq, 0)
    assert loss.received == len(set(stream))
    expected_missing = (
        lost - (0 if 60000 in arrived else 1) - (0 if (62999 & 0xFFFF) in arrived else 1)
    )
    assert loss.missing == expected_missing
