"""What ``/proc`` says about processes, CPUs and UDP sockets: the one home of these
readers, for ``parley load`` (server CPU and RSS) and the benchmarks (per-process and
per-core CPU, socket drops). Linux only; each call reads the files once, no state.
"""

from __future__ import annotations

import contextlib
import os

#: Clock ticks per second: the unit of the CPU times in ``/proc``.
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def process_cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process, all its threads, in seconds (reaped children excluded)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``, in seconds."""
    return sum(process_cpu_times(pid))


def process_rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (10^6 bytes), from ``/proc/PID/statm``."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE_SIZE / 1e6


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from the ``cpu`` line of ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return float(sum(values) - idle), float(sum(values))


def core_busy() -> dict[int, tuple[float, float]]:
    """Per CPU: (busy seconds incl. irq/softirq, total seconds) from ``/proc/stat``."""
    out: dict[int, tuple[float, float]] = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(v) for v in parts[1:9]]
                idle = values[3] + values[4]
                total = sum(values)
                out[int(parts[0][3:])] = ((total - idle) / CLK_TCK, total / CLK_TCK)
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` has open (empty if it is gone)."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def udp_drops(path: str = "/proc/net/udp") -> dict[int, int]:
    """inode -> cumulative receive drops of every UDP socket in this namespace.

    ``/proc/PID/net/udp`` gives those of the namespace of process PID instead.
    """
    out: dict[int, int] = {}
    with open(path, encoding="ascii") as f:
        next(f)
        for line in f:
            parts = line.split()
            out[int(parts[9])] = int(parts[-1])
    return out


def udp_snmp(path: str = "/proc/net/snmp") -> dict[str, int]:
    """The ``Udp:`` counters of ``/proc/net/snmp`` (or ``/proc/PID/net/snmp``)."""
    with open(path, encoding="ascii") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))
