"""microgpt: the whole GPT algorithm in code you can read in one sitting.

Everything else is just efficiency: every engine computes the same function as the
reference engine (`microgpt.ref`), which reproduces the original program bit for bit.

    model = microgpt.load("runs/names/model.safetensors")   # see microgpt.api
    model.sample(10, prompt="ma", novel=True)

Importing the package is cheap: `load` and `Model` are imported on first use (PEP 562).
"""

from .version import __version__

_API = ("load", "Model")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'microgpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
