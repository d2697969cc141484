"""The `microgpt` command line: train and sample.

Stdout carries exactly what the original program prints (so `diff` against its output is
empty); everything else (where files went, warnings) goes to stderr. A user's mistake ends
with one line on stderr and exit status 2; tracebacks are for bugs. The engine the user
chose is imported only once they chose it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

from . import __version__
from . import checkpoint as ckpt_io
from .config import PRESETS, ConfigError, get_preset
from .data import DataError, default_names_path, load_docs
from .engine import ENGINES, EngineError, load_engine
from .init import num_params
from .sample import sample_lines
from .studio.cli import add_studio_parser
from .tokenizer import TokenizerError
from .train import new_trainer

DEFAULT_ENGINE = "ref"
USER_ERRORS = (ConfigError, DataError, EngineError, ckpt_io.CheckpointError, TokenizerError)


class UsageError(Exception):
    """A mistake in how microgpt was called."""


def say(*args) -> None:
    """Tell the user something that is not the program's output (stderr)."""
    print(*args, file=sys.stderr, flush=True)


# --- train ----------------------------------------------------------------------------------


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and print samples",
        description="Train a model. The defaults reproduce the original microgpt run exactly.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="final",
                   help="which original revision to follow (default: final)")
    p.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE,
                   help=f"computation engine (default: {DEFAULT_ENGINE})")
    p.add_argument("--data", metavar="PATH",
                   help="UTF-8 text file, one document per line (default: the names dataset)")
    p.add_argument("--steps", type=int, metavar="N", help="training steps (preset: 1000 / 500)")
    p.add_argument("--batch-size", type=int, metavar="B", help="documents per step (default 1)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 42)")
    p.add_argument("--n-embd", type=int, metavar="N", help="embedding width (default 16)")
    p.add_argument("--n-head", type=int, metavar="N", help="attention heads (default 4)")
    p.add_argument("--n-layer", type=int, metavar="N", help="transformer layers (default 1)")
    p.add_argument("--block-size", type=int, metavar="N", help="context length (preset: 16 / 8)")
    p.add_argument("--learning-rate", type=float, metavar="X", help="Adam learning rate (0.01)")
    p.add_argument("--temperature", type=float, metavar="X",
                   help="temperature of the samples printed after training (0.5)")
    p.add_argument("--num-samples", type=int, metavar="N",
                   help="samples printed after training (20)")
    p.add_argument("--out", metavar="DIR",
                   help="run directory: metrics.jsonl and model.safetensors are written there")
    p.add_argument("--force", action="store_true",
                   help="allow --out to point at a directory that already holds a run")
    p.set_defaults(func=cmd_train)


def configs_from_args(args):
    """The preset's configs with the flags the user gave laid over them."""
    preset = get_preset(args.preset)
    model = dataclasses.replace(
        preset.model,
        **{k: v for k, v in [("n_embd", args.n_embd), ("n_head", args.n_head),
                             ("n_layer", args.n_layer), ("block_size", args.block_size)]
           if v is not None},
    )
    optim = preset.optim
    if args.learning_rate is not None:
        optim = dataclasses.replace(optim, learning_rate=args.learning_rate)
    train = dataclasses.replace(
        preset.train,
        **{k: v for k, v in [("num_steps", args.steps), ("batch_size", args.batch_size),
                             ("seed", args.seed), ("temperature", args.temperature),
                             ("num_samples", args.num_samples)]
           if v is not None},
    )
    for config in (model, optim, train):
        config.validate()
    return preset, model, optim, train


def prepare_out_dir(out: str, force: bool) -> Path:
    """Create the run directory; refuse to overwrite another run's files unless forced."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out!r} exists and is not a directory; choose another path")
    existing = [name for name in ("model.safetensors", "metrics.jsonl") if (path / name).exists()]
    if existing and not force:
        raise UsageError(
            f"--out {out!r} already holds a run ({existing[0]}); choose a new directory "
            "or pass --force to overwrite it"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out {out!r}: {e.strerror}") from None
    return path


def cmd_train(args) -> int:
    preset, model, optim, train = configs_from_args(args)
    out = prepare_out_dir(args.out, args.force) if args.out else None
    engine_cls = load_engine(args.engine)

    rng = random.Random(train.seed)  # Let there be order among chaos
    data_path = Path(args.data) if args.data else default_names_path()
    docs, data_sha256 = load_docs(data_path, rng)
    print(f"num docs: {len(docs)}")
    trainer = new_trainer(
        engine_cls, docs, model, optim, train, rng,
        preset=preset.name, extra={"data_sha256": data_sha256, "data_path": str(data_path)},
    )
    print(f"vocab size: {trainer.tokenizer.vocab_size}")
    print(f"num params: {num_params(model, trainer.tokenizer.vocab_size)}")

    metrics = open(out / "metrics.jsonl", "w", encoding="utf-8") if out else None
    try:
        while not trainer.done:
            result = trainer.step()
            print(f"step {result.step:4d} / {train.num_steps:4d} | loss {result.loss:.4f}")
            if metrics:
                metrics.write(json.dumps({"step": result.step, "loss": result.loss,
                                          "lr": result.lr}) + "\n")
    finally:
        if metrics:
            metrics.close()
    if out:
        # Saved before sampling: `microgpt sample` on this file, without --seed, continues
        # the same random stream and prints the same samples as below.
        ckpt_io.save(out / "model.safetensors", trainer.checkpoint())
        say(f"saved {out / 'model.safetensors'} and {out / 'metrics.jsonl'}")

    print(f"\n{preset.inference_header}")
    for line in sample_lines(trainer.engine, trainer.tokenizer, rng, train.num_samples,
                             train.temperature):
        print(line, flush=True)
    return 0


# --- sample ---------------------------------------------------------------------------------


def add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="print samples from a saved model",
        description="Sample from a checkpoint. Without --seed, the random stream continues "
        "where training left it, so the samples equal the ones `train` printed.",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a model.safetensors file")
    p.add_argument("--num-samples", type=int, metavar="N", help="how many samples (default: 20)")
    p.add_argument("--temperature", type=float, metavar="X",
                   help="0 is greedy, higher is more varied (default: the run's, 0.5)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="random seed (default: continue the checkpoint's saved random state)")
    p.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE,
                   help=f"computation engine (default: {DEFAULT_ENGINE})")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    ckpt = ckpt_io.load(args.checkpoint)
    train = dataclasses.replace(
        ckpt.train,
        **{k: v for k, v in [("num_samples", args.num_samples),
                             ("temperature", args.temperature)] if v is not None},
    )
    train.validate()
    engine_cls = load_engine(args.engine)
    tokenizer = ckpt.tokenizer
    engine = engine_cls(ckpt.model, ckpt.optim, tokenizer.vocab_size, ckpt.params)
    rng = random.Random(args.seed) if args.seed is not None else ckpt.rng()
    for line in sample_lines(engine, tokenizer, rng, train.num_samples, train.temperature):
        print(line, flush=True)
    return 0


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microgpt",
        description="Train and sample a tiny GPT: the original microgpt algorithm, as software.",
    )
    parser.add_argument("--version", action="version", version=f"microgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_train_parser(sub)
    add_sample_parser(sub)
    add_studio_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
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
