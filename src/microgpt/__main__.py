"""The `microgpt` command: one parser, each subcommand from the front end that owns it.

This is the only module that imports the front ends side by side (train, sample and eval
from cli.py; bench; export; studio; sweep): they never import each other, and each
imports an engine only once the user chose it.
"""

from __future__ import annotations

import sys

from .bench import add_bench_parser
from .cli import add_eval_parser, add_sample_parser, add_train_parser
from .export.cli import add_export_parser
from .flags import ArgumentParser, UsageError, say
from .runs import USER_ERRORS
from .studio.cli import add_studio_parser
from .sweep import add_sweep_parser
from .version import __version__


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


def main(argv: list[str] | None = None) -> int:
    """Run `microgpt ARGV`; the exit status (0, 2 for a user's mistake, 128+N on signal N)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, *USER_ERRORS) as e:
        say(f"microgpt: error: {e}")
        return 2
    except KeyboardInterrupt:
        say("microgpt: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `microgpt train | head`
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
