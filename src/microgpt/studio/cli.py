"""`microgpt studio`: the flags, and starting the server. The server and the engine are
imported only when the command runs."""

from __future__ import annotations

import argparse
import math

from ..config import PRESETS, ConfigError
from ..engine import ENGINES, EngineError, load_engine

DEFAULT_PORT = 8765


def default_engine() -> str:
    """The NumPy engine when this installation has it, else the reference engine."""
    try:
        load_engine("numpy")
        return "numpy"
    except EngineError:
        return "ref"


def add_studio_parser(sub) -> None:
    p = sub.add_parser(
        "studio",
        help="watch the model learn, in the browser",
        description="Start a local web server with a page that trains the model live (the "
        "same training loop and numbers as `microgpt train` with the same flags) and looks "
        "inside it: attention, next-token probabilities, embeddings, the autograd graph.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        metavar="PATH",
        help="UTF-8 text file, one document per line (default: the names dataset)",
    )
    src.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="open a model.safetensors (and continue training it if its data file is found)",
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
    p.add_argument(
        "--engine",
        choices=list(ENGINES),
        default=None,
        help="computation engine (default: numpy when installed, else ref)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="final",
        help="which original revision to follow (default: final)",
    )
    p.add_argument("--steps", type=int, metavar="N", help="training steps (preset: 1000 / 500)")
    p.add_argument("--batch-size", type=int, metavar="B", help="documents per step (default 1)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 42)")
    p.add_argument("--n-embd", type=int, metavar="N", help="embedding width (default 16)")
    p.add_argument("--n-head", type=int, metavar="N", help="attention heads (default 4)")
    p.add_argument("--n-layer", type=int, metavar="N", help="transformer layers (default 1)")
    p.add_argument("--block-size", type=int, metavar="N", help="context length (preset: 16 / 8)")
    p.add_argument("--learning-rate", type=float, metavar="X", help="Adam learning rate (0.01)")
    p.add_argument(
        "--val-split",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this fraction of the documents and show their loss (default 0)",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=100,
        metavar="N",
        help="evaluate the held-out documents every N steps (default 100)",
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
    p.set_defaults(func=cmd_studio)


def build_session(args):
    """The session `microgpt studio` serves for these parsed flags."""
    from .adapters import checkpoint_run, new_run
    from .session import Session

    for name in ("sample_every", "val_every", "num_samples"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise ConfigError(f"--temperature must be a number >= 0, got {args.temperature}")
    engine = args.engine or default_engine()
    # `microgpt train` reads --temperature and --num-samples as the samples printed after
    # training; here they set the live samples, so the run's configs keep the preset's.
    train_args = argparse.Namespace(**{**vars(args), "temperature": None, "num_samples": None})
    if args.checkpoint:
        make_run = lambda: checkpoint_run(train_args, engine)
    else:
        make_run = lambda: new_run(train_args, engine)
    return Session(
        make_run, sample_every=args.sample_every, num_samples=args.num_samples,
        temperature=args.temperature, val_every=args.val_every,
    )  # fmt: skip


def cmd_studio(args) -> int:
    from ..cli import UsageError, say
    from .server import StudioServer, is_loopback

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    session = build_session(args)
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
