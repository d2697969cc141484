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
    from .bench import add_bench_parser
    from .cli import add_eval_parser, add_sample_parser, add_train_parser
    from .export.cli import add_export_parser
    from .files import WriteError, describe
    from .flags import ArgumentParser, UsageError, say
    from .runs import USER_ERRORS
    from .studio.cli import add_studio_parser
    from .sweep import add_sweep_parser
    from .version import __version__
except KeyboardInterrupt:  # Ctrl-C in the first tens of milliseconds: no traceback either
    sys.stderr.write("microgpt: interrupted\n")
    sys.exit(130)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="microgpt",
        description="Train and sample a tiny GPT: the original microgpt algorithm, as software.",
    )
    parser.add_argument("--version", action="version", version=f"microgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_bench_parser(sub)
    add_eval_parser(sub)
    add_export_parser(sub)
    add_studio_parser(sub)
    add_sweep_parser(sub)
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
        args = build_parser().parse_args(argv)
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
