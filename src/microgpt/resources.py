"""Memory, checked before work starts. Standard library only.

A run's memory is known before anything is allocated: the engine's estimate for the model
and batch shape (engine.Engine.memory_estimate: weights, gradients, Adam's moments,
activations, vocabulary-sized arrays), plus the documents (data.py: about 1 byte per
character and 8 per document). `check` compares it with what this process may still
allocate, and refuses a run that cannot fit in one line that says what to lower, in
milliseconds, instead of letting it grow until the kernel's OOM killer ends it.
"""

from __future__ import annotations

import os

try:
    import resource
except ImportError:  # not POSIX
    resource = None

from .config import ConfigError

# Left free beyond the estimate: the interpreter, the engine's library (NumPy, torch), and
# what the estimates do not count. Also the smallest budget the documents ever get.
MARGIN = 256 * 2**20


class ResourceError(ConfigError):
    """A run that does not fit in this machine's memory; the message says what to lower."""


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # elsewhere (macOS): free pages, a lower bound on what could be had
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """What the cgroup (v2) of a container still allows this process, if it has a limit."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        base = f"/sys/fs/cgroup{path}".rstrip("/")
        with open(f"{base}/memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(f"{base}/memory.current") as f:
            return max(int(limit) - int(f.read()), 0)
    except (OSError, ValueError, StopIteration):
        return None


def _rlimit_available() -> int | None:
    """What RLIMIT_AS (ulimit -v) leaves of this process's address space."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, ValueError, StopIteration):
        return None
    return max(soft - size, 0)


def available_memory() -> int | None:
    """Bytes this process can still allocate (the least of the machine's available memory,
    its container's limit and its own address-space limit); None when unknown."""
    known = [n for n in (_meminfo_available(), _cgroup_available(), _rlimit_available())
             if n is not None]  # fmt: skip
    return min(known) if known else None


def size(n: int) -> str:
    """Bytes for a person: 12.3 MiB, 4.5 GiB, 7.0 TiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 2**10:,.1f} KiB"


def check(need: dict[str, int], advice: str, available: int | None = None,
          error: type[Exception] = ResourceError) -> None:  # fmt: skip
    """Refuse a run whose parts (`need`: what -> bytes) do not fit in the memory available,
    ending the message with `advice` (e.g. "lower --n-embd, --block-size or --batch-size")."""
    available = available_memory() if available is None else available
    if available is None:
        return
    total = sum(need.values())
    if total + MARGIN <= available:
        return
    parts = ", ".join(f"{what} {size(n)}" for what, n in need.items() if n)
    raise error(
        f"this needs about {size(total)} of memory ({parts}) and {size(available)} is "
        f"available; {advice}"
    )


def budget(used: int, available: int | None = None) -> int | None:
    """The bytes left for what is still to come (e.g. the documents) after `used`."""
    available = available_memory() if available is None else available
    if available is None:
        return None
    return max(available - MARGIN - used, 0)
