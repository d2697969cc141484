"""Measuring an export: the loss of its weights on the run's documents, computed by an
engine through the run library, and the peak memory of the process that runs it."""

from __future__ import annotations

import os

from .. import runs
from ..checkpoint import Checkpoint
from ..tensor import Tensor


def eval_docs(ckpt: Checkpoint, data: str | os.PathLike) -> list[str]:
    """The documents the loss is measured on: `data` split as the model was trained."""
    return runs.scoring_docs(ckpt, data)


def engine_loss(
    ckpt: Checkpoint, params: dict[str, Tensor], docs: list[str], engine: str
) -> tuple[float, int]:
    """Mean loss per predicted token of `params` over `docs`, computed by `engine`."""
    model = runs.model_from_checkpoint(ckpt, runs.EngineSpec(name=engine), params)
    result = model.evaluate(docs)
    return result.loss, result.tokens


# A function source for the measuring subprocesses (python -I: standard library only).
PEAK_RSS = """
def peak_rss():
    # VmHWM: this process's own high-water mark (ru_maxrss on Linux would also count the
    # exporter it was forked from, as the kernel carries it across exec)
    try:
        with open("/proc/self/status") as f:
            return 1024 * int(next(ln for ln in f if ln.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB elsewhere
"""
