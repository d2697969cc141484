"""The `microgpt` command: one parser, each subcommand from the front end that owns it.

This is the only module that imports the front ends side by side (train, sample and eval
from cli.py; bench; export; studio; sweep): they never import each other, and each
imports an engine only once the user chose it.

Whatever happens, the command ends with an exit status and at most one line on stderr:
0; 2 and `microgpt: error: ...` for a mistake (the user's, or a file or folder the system
will not let us write, stdout included); 130 on Ctrl-C (at any moment, even while the
modules below are still being imported); 1 for a closed pipe (`microgpt sample | head`).
"""

from __future__ import annotations

import os
import signal
import sys

try:
    from .files import WriteError, describe
    from .flags import ArgumentParser, UsageError, say
    from .runs import USER_ERRORS
    from .version import __version__
except KeyboardInterrupt:  # Ctrl-C in the first tens of milliseconds: no traceback either
    sys.stderr.write("microgpt: interrupted\n")
    sys.exit(130)

# Each command, in the order `microgpt --help` lists them: the front end that owns it (a
# module) and the function that adds its subparser.
# NOTE: a command imports its own front end only (all of them for --help or a mistyped
# command): the others' modules would be a third of `microgpt train`'s start-up and memory
# (the sweep's alone load OpenSSL through hashlib, statistics, csv: ~5 MB and ~0.05 s).
COMMANDS = {
    "train": ("microgpt.cli", "add_train_parser"),
    "sample": ("microgpt.cli", "add_sample_parser"),
    "bench": ("microgpt.bench", "add_bench_parser"),
    "eval": ("microgpt.cli", "add_eval_parser"),
    "export": ("microgpt.export.cli", "add_export_parser"),
    "studio": ("microgpt.studio.cli", "add_studio_parser"),
    "sweep": ("microgpt.sweep", "add_sweep_parser"),
}


def build_parser(argv: list[str] | None = None) -> ArgumentParser:
    """The parser of `microgpt ARGV`: every command's subparser, or only the one ARGV names
    (its first argument not starting with "-": the top level's flags take no value)."""
    import importlib

    parser = ArgumentParser(
        prog="microgpt",
        description="Train and sample a tiny GPT: the original microgpt algorithm, as software.",
    )
    parser.add_argument("--version", action="version", version=f"microgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    first = next((a for a in (argv or []) if not a.startswith("-")), None)
    for command, (module, add_parser) in COMMANDS.items():
        if first not in COMMANDS or command == first:
            getattr(importlib.import_module(module), add_parser)(sub)
    return parser


class _Stdout:
    """sys.stdout, whose failure to write (a full disk, /dev/full) is a WriteError: one
    line, instead of a traceback now or an "Exception ignored" at exit."""

    def __init__(self, stream):
        self._stream = stream

    def _guard(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            _drop_stdout()
            raise WriteError(f"cannot write to standard output: {describe(e)}") from None

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _drop_stdout() -> None:
    """Send the rest of stdout nowhere, so that the interpreter's last flush at exit does not
    report the same failure again (the Python docs' advice for a closed pipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests): nothing to do
        pass


def main(argv: list[str] | None = None) -> int:
    """Run `microgpt ARGV`; the exit status (0, 2 for a user's mistake, 128+N on signal N)."""
    from . import _interrupted_while_starting

    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:  # started: Python's again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    stdout, sys.stdout = sys.stdout, _Stdout(sys.stdout)
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(argv).parse_args(argv)
        code = args.func(args)
        sys.stdout.flush()  # a failure to write stdout shows here, not at exit
        return code
    except (UsageError, WriteError, *USER_ERRORS) as e:
        say(f"microgpt: error: {e}")
        return 2
    except KeyboardInterrupt:
        say("microgpt: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `microgpt train | head`
        _drop_stdout()
        return 1
    except OSError as e:  # one we did not foresee: still one line
        where = f" ({e.filename})" if e.filename else ""
        say(f"microgpt: error: {describe(e)}{where}")
        return 1
    finally:
        if isinstance(sys.stdout, _Stdout):
            sys.stdout = stdout


def run() -> None:
    """The console script: main(), and no traceback from a Ctrl-C after it returns."""
    try:
        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("microgpt: interrupted\n")
        code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting now, whatever the user presses
    sys.exit(code)


if __name__ == "__main__":
    run()
