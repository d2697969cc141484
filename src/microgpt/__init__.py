"""microgpt: the whole GPT algorithm in code you can read in one sitting.

Everything else is just efficiency: every engine computes the same function as the
reference engine (`microgpt.ref`), which reproduces the original program bit for bit.

    model = microgpt.load("runs/names/model.safetensors")   # see microgpt.api
    model.sample(10, prompt="ma", novel=True)

Importing the package is cheap: `load` and `Model` are imported on first use (PEP 562).
"""

import os as _os
import signal as _signal
import sys as _sys

from .version import __version__


def _interrupted_while_starting(signum, frame):
    _os.write(2, b"microgpt: interrupted\n")
    _os._exit(130)


# NOTE: `python -m microgpt` (argv[0] is "-m" while the module is found) and the `microgpt`
# script import this package first: a Ctrl-C while the command's modules are still being
# imported ends it quietly, as Ctrl-C does later (__main__.main restores Python's handler).
# A library import leaves the signal alone.
if _sys.argv[:1] == ["-m"] or _os.path.basename(_sys.argv[0] if _sys.argv else "") == "microgpt":
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)

_API = ("load", "Model")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'microgpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
