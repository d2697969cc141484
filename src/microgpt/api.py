"""The Python API: load a checkpoint, then sample, report and evaluate.

>>> import microgpt
>>> model = microgpt.load("runs/names/model.safetensors")          # doctest: +SKIP
>>> model.sample(5, prompt="ma", novel=True, seed=1)               # doctest: +SKIP
['maria', 'maylen', ...]

A thin caller of the run library (runs.py), as `microgpt sample` and `microgpt eval` are:
`Model` is runs.Model, so `model.evaluate(path)` scores exactly what `microgpt eval` scores.
The engine named is imported only when `load` is called. Standard library only (the engine
may not be).
"""

from __future__ import annotations

import os

from .runs import EngineSpec, Model, load_model

__all__ = ["Model", "load"]


def load(
    path: str | os.PathLike,
    engine: str | None = None,
    dtype: str = "float64",
    device: str | None = None,
    compile: bool = False,
) -> Model:
    """Load a checkpoint onto the named engine (default: the fastest installed; or "numpy",
    "ref", "torch"). `device` (and `compile`) are the torch engine's, e.g. device="cuda"."""
    return load_model(path, EngineSpec(name=engine, dtype=dtype, device=device, compile=compile))
