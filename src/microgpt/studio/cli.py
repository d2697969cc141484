"""`microgpt studio`: the flags, and starting the server. The server and the engine are
imported only when the command runs."""

from __future__ import annotations

import dataclasses
import gc
import math

from ..config import ConfigError
from ..flags import (
    DEFAULT_ENGINE_HELP,
    UsageError,
    add_config_flags,
    add_device_flags,
    add_setup_flags,
    resume_spec,
    run_spec,
    say,
)

DEFAULT_PORT = 8765


def add_studio_parser(sub) -> None:
    p = sub.add_parser(
        "studio",
        help="watch the model learn, in the browser",
        description="Start a local web server with a page that trains the model live (the "
        "same training loop and numbers as `microgpt train` with the same flags) and looks "
        "inside it: attention, next-token probabilities, embeddings, the autograd graph.",
    )
    # The training flags are `microgpt train`'s own (and become the same RunSpec).
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="open a model.safetensors and continue its run on the run's data file (or --data)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        metavar="N",
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    p.add_argument("--open", action="store_true", help="open the page in the web browser")
    add_setup_flags(p, resumed="with --checkpoint",
                    engine_default=f"{DEFAULT_ENGINE_HELP}; with --checkpoint")
    add_config_flags(p)
    p.add_argument(
        "--val-every",
        type=int,
        default=100,
        metavar="N",
        help="evaluate the held-out documents (--val-fraction) every N steps (default 100)",
    )
    p.add_argument(
        "--sample-every",
        type=int,
        default=50,
        metavar="N",
        help="show fresh samples and embeddings every N steps (default 50)",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=8,
        metavar="N",
        help="samples shown each time (default 8)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.5,
        metavar="X",
        help="temperature of the live samples (default 0.5)",
    )
    add_device_flags(p, compile_flag=True)
    p.set_defaults(func=cmd_studio)


def build_session(args):
    """The session `microgpt studio` serves for these parsed flags."""
    from .session import Session

    for name in ("sample_every", "val_every", "num_samples"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ConfigError(f"--temperature must be a number >= 0, got {args.temperature}")
    # `microgpt train` reads --temperature and --num-samples as the samples printed after
    # training; here they set the live samples, so the run's configs keep the preset's.
    if args.checkpoint:
        spec = resume_spec(args, args.checkpoint, action="opening a checkpoint")
        spec = dataclasses.replace(spec, temperature=None, num_samples=None)
    else:
        spec = run_spec(args, temperature=None, num_samples=None)
        spec.configs()  # a bad flag is a one-line error before the server starts
    return Session(
        spec, sample_every=args.sample_every, num_samples=args.num_samples,
        temperature=args.temperature, val_every=args.val_every,
    )  # fmt: skip


GC_THRESHOLD = 100_000  # allocations between young-generation collections (Python: 700)


def cmd_studio(args) -> int:
    from .server import StudioServer, is_loopback

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    session = build_session(args)
    # NOTE: a reference-engine step makes ~10^5 Values; at Python's default thresholds they
    # set off a full collection every few steps, 30-180 ms during which every thread (the
    # event streams too) stands still. The Values are acyclic (freed by their reference
    # counts), so collecting cycles less often costs little memory; what setup made is
    # moved out of the collector's way for good.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        server = StudioServer(session, args.host, args.port)
    except OSError as e:
        hint = "; choose another with --port N, or --port 0 for a free one" if e.errno else ""
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror}{hint}") from None
    if not is_loopback(args.host):
        say(
            f"microgpt: warning: --host {args.host} lets other machines reach the studio; "
            "anyone who can connect can train, sample and read the model"
        )
    say(f"engine {session.engine.name}, {session.state()['num_params']} parameters; "
        "Ctrl+C stops the server")  # fmt: skip
    print(server.url, flush=True)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        server.server_close()
    return 0
