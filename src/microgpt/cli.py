"""The `microgpt` command line: train, sample and eval.

Stdout carries exactly what the original program prints (so `diff` against its output is
empty); everything else (where files went, warnings) goes to stderr. A user's mistake ends
with one line on stderr and exit status 2; tracebacks are for bugs. The engine the user
chose is imported only once they chose it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from . import __version__, distributed, rundir
from . import checkpoint as ckpt_io
from .bench import add_bench_parser
from .config import DOC_MODES, PRESETS, ConfigError, Preset, get_preset, to_dict
from .data import (
    DataError,
    default_names_path,
    load_docs,
    read_text,
    split_documents,
    split_validation,
)
from .engine import ENGINES, EngineError, load_engine
from .export.cli import add_export_parser
from .fingerprint import METADATA_KEY as DOCS_FINGERPRINT
from .fingerprint import Fingerprint
from .init import num_params
from .sample import TRIES_PER_SAMPLE, format_report, sample_lines
from .studio.cli import add_studio_parser
from .tokenizer import TokenizerError
from .train import Trainer, TrainingError, new_trainer, resume_trainer
from .train import run as run_training

DEFAULT_ENGINE = "numpy"
DTYPES = ("float64", "float32", "bfloat16")  # each engine accepts some (Engine.dtypes)
USER_ERRORS = (
    ConfigError, DataError, EngineError, ckpt_io.CheckpointError, TokenizerError,
    rundir.RunDirError, TrainingError,
)


class UsageError(Exception):
    """A mistake in how microgpt was called."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"microgpt: error: {message}; see '{self.prog} --help'\n")


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
    add_setup_flags(p)
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="validation loss and bits/char every N steps (needs --val-fraction; "
                   "default: only after the last step)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write DIR/model.safetensors every N steps (needs --out; default: only "
                   "at the end and on Ctrl-C/SIGTERM)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its latest checkpoint, with its saved "
                   "configs; the result is bit-identical to an uninterrupted run")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: accept a data file whose sha256 differs from the run's")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no progress messages on stderr")
    add_config_flags(p)
    p.add_argument("--temperature", type=float, metavar="X",
                   help="temperature of the samples printed after training (0.5)")
    p.add_argument("--num-samples", type=int, metavar="N",
                   help="samples printed after training (20)")
    p.add_argument("--out", metavar="DIR",
                   help="run directory: config.json, metrics.jsonl, model.safetensors (latest) "
                   "and best.safetensors (lowest validation loss) are written there")
    p.add_argument("--force", action="store_true",
                   help="allow --out to point at a directory that already holds a run")
    add_device_flags(p, compile_flag=True)
    p.set_defaults(func=cmd_train)


def add_setup_flags(p, resumed: str = "on --resume",
                    engine_default: str = f"{DEFAULT_ENGINE}; on --resume, the run's") -> None:
    """The flags `build_new_trainer` reads to set up a run (preset, engine, dtype, data,
    doc mode, validation split); `microgpt studio` adds the same ones."""
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="which original revision to follow (default: final)")
    p.add_argument("--engine", choices=list(ENGINES),
                   help=f"computation engine (default: {engine_default})")
    p.add_argument("--dtype", choices=DTYPES,
                   help="float precision of the engine (default: float64, which matches the "
                   f"reference; float32 is faster, numpy engine only; {resumed}, the run's)")
    p.add_argument("--data", metavar="PATH",
                   help="UTF-8 text file (default: the names dataset); see --doc-mode")
    p.add_argument("--doc-mode", choices=DOC_MODES,
                   help="documents are the file's non-empty lines (lines, the default), its "
                   "blank-line separated paragraphs, or the whole text; documents longer than "
                   "the context are trained on random windows (paragraphs, text)")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="hold out this share of the documents (chosen with the seed) for "
                   "validation (default 0: none)")


def add_config_flags(p) -> None:
    """The flags that override the preset's model and training configs (`configs_from_args`)."""
    p.add_argument("--steps", type=int, metavar="N", help="training steps (preset: 1000 / 500)")
    p.add_argument("--batch-size", type=int, metavar="B", help="documents per step (default 1)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 42)")
    p.add_argument("--n-embd", type=int, metavar="N", help="embedding width (default 16)")
    p.add_argument("--n-head", type=int, metavar="N", help="attention heads (default 4)")
    p.add_argument("--n-layer", type=int, metavar="N", help="transformer layers (default 1)")
    p.add_argument("--block-size", type=int, metavar="N", help="context length (preset: 16 / 8)")
    p.add_argument("--learning-rate", type=float, metavar="X", help="Adam learning rate (0.01)")


def add_model_engine_flags(p) -> None:
    """--engine, --dtype and the torch flags of the commands that load a saved model."""
    p.add_argument("--engine", choices=list(ENGINES), default=DEFAULT_ENGINE,
                   help=f"computation engine (default: {DEFAULT_ENGINE})")
    p.add_argument("--dtype", choices=DTYPES, default="float64",
                   help="float precision of the engine (default: float64)")
    add_device_flags(p)


def add_device_flags(p, compile_flag: bool = False) -> None:
    """Flags of the torch engine (they are refused with another engine)."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="torch engine only: where to compute (default: auto = CUDA, else CPU)")
    if compile_flag:
        p.add_argument("--compile", action="store_true",
                       help="torch engine only: torch.compile the training step (slow start)")


def engine_kwargs(args, engine_name: str) -> dict:
    """Constructor keywords for the chosen engine from the torch-only flags."""
    kwargs = {"device": args.device} if args.device else {}
    if getattr(args, "compile", False):
        kwargs["compile"] = True
    if kwargs and engine_name != "torch":
        flags = " and ".join(f"--{k}" for k in kwargs)
        raise UsageError(f"{flags} needs --engine torch (the {engine_name} engine runs on the CPU)")
    return kwargs


def configs_from_args(args):
    """The preset's configs with the flags the user gave laid over them."""
    preset = get_preset(args.preset or "final")
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
                             ("num_samples", args.num_samples), ("doc_mode", args.doc_mode),
                             ("val_fraction", args.val_fraction)]
           if v is not None},
    )
    for config in (model, optim, train):
        config.validate()
    return preset, model, optim, train


# Flags that shape the run itself; `--resume` uses the run's saved values and refuses these.
FIXED_ON_RESUME = ("preset", "batch_size", "seed", "n_embd", "n_head", "n_layer", "block_size",
                   "learning_rate", "doc_mode", "val_fraction", "out", "force")


def fixed_flag_given(args) -> str | None:
    """The first flag of FIXED_ON_RESUME that `args` gives (as "--name"), else None."""
    for name in FIXED_ON_RESUME:
        value = getattr(args, name, None)
        if value is not None and value is not False:  # 0 is a value
            return "--" + name.replace("_", "-")
    return None


def loop_options(args, saved: dict[str, str]) -> tuple[int, int]:
    """--eval-every and --checkpoint-every: the flags, else the run's saved values, else 0."""
    values = []
    for name in ("eval_every", "checkpoint_every"):
        value = getattr(args, name)
        if value is None:
            value = int(saved.get(name, "0")) if saved.get(name, "0").isdigit() else 0
        if value < 0:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be >= 0 (0 turns it off), got {value}")
        values.append(value)
    return values[0], values[1]


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step (so a
    checkpoint can be written); a second SIGINT/SIGTERM quits at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_config(trainer, engine_name: str, eval_every: int, checkpoint_every: int) -> dict:
    """What DIR/config.json records: enough for a person to see (and redo) the run."""
    return {
        "microgpt_version": __version__,
        "preset": trainer.preset,
        "engine": engine_name,
        "data_path": trainer.extra.get("data_path"),
        "data_sha256": trainer.extra.get("data_sha256"),
        "num_train_docs": len(trainer.docs),
        "num_val_docs": len(trainer.val_docs),
        "vocab": "".join(trainer.tokenizer.uchars),
        "model": to_dict(trainer.model),
        "optim": to_dict(trainer.optim),
        "train": to_dict(trainer.train),
        "eval_every": eval_every,
        "checkpoint_every": checkpoint_every,
    }


def cmd_train(args) -> int:
    """Train; under torchrun every rank trains, and only rank 0 prints and writes files."""
    launch = distributed.from_env()
    if not launch.distributed:
        return cmd_resume(args) if args.resume else train_run(args)
    if args.resume:
        ckpt = ckpt_io.load(rundir.check_resumable(args.resume))
        engine_name = args.engine or ckpt.extra.get("engine")
        batch_size = ckpt.train.batch_size
    else:
        engine_name = args.engine or DEFAULT_ENGINE
        batch_size = configs_from_args(args)[3].batch_size
    if engine_name != "torch":
        raise UsageError(
            f"torchrun started {launch.world_size} processes; distributed training needs "
            "--engine torch"
        )
    distributed.check_batch(launch, batch_size)
    run = cmd_resume if args.resume else train_run
    if launch.is_main:
        say(distributed.describe(launch, batch_size))
        return run(args)
    follower = argparse.Namespace(**{**vars(args), "writes": False})  # rank 0 writes the files
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        return run(follower)


class NewRun(NamedTuple):
    preset: Preset
    trainer: Trainer
    engine_name: str


def build_new_trainer(
    args, extra: dict[str, str] | None = None, show: Callable[[str], None] | None = None
) -> NewRun:
    """A new run from the flags of `add_setup_flags` and `add_config_flags`: the configs,
    the engine, then one generator seeded with --seed that shuffles the documents and then
    draws the weights, the validation split, and a Trainer whose extra records the data's
    sha256 and path, `extra`, and the training documents' fingerprint (for --novel).

    `microgpt train` and `microgpt studio` both set up a run here, so the same flags give the
    same run. `show` gets the lines the original prints (num docs, vocab size, num params).
    """
    preset, model, optim, train = configs_from_args(args)
    engine_name = args.engine or DEFAULT_ENGINE
    kwargs = engine_kwargs(args, engine_name)
    engine_cls = load_engine(engine_name)

    rng = random.Random(train.seed)  # Let there be order among chaos
    data_path = Path(args.data) if args.data else default_names_path()
    docs, data_sha256 = load_docs(data_path, rng, train.doc_mode)
    train_docs, val_docs = split_validation(docs, train.val_fraction)
    if show is not None:
        show(f"num docs: {len(docs)}")
    extra = {"data_sha256": data_sha256, "data_path": str(data_path.resolve()), **(extra or {})}
    trainer = new_trainer(
        engine_cls, train_docs, model, optim, train, rng, dtype=args.dtype or "float64",
        preset=preset.name, val_docs=val_docs, engine_kwargs=kwargs,
        extra={**extra, DOCS_FINGERPRINT: Fingerprint.from_docs(train_docs).to_json()},
    )
    if show is not None:
        show(f"vocab size: {trainer.tokenizer.vocab_size}")
        show(f"num params: {num_params(model, trainer.tokenizer.vocab_size)}")
    return NewRun(preset, trainer, engine_name)


def train_run(args) -> int:
    """A new run: check everything, then build the trainer, train, save and sample."""
    if args.allow_data_change:
        raise UsageError("--allow-data-change only applies with --resume DIR")
    train = configs_from_args(args)[3]
    eval_every, checkpoint_every = loop_options(args, {})
    if checkpoint_every and not args.out:
        raise UsageError("--checkpoint-every needs --out DIR to write the checkpoints to")
    if eval_every and not train.val_fraction:
        raise UsageError("--eval-every needs held-out documents; add --val-fraction F (e.g. 0.1)")
    if args.out and getattr(args, "writes", True):
        rundir.check_new(args.out, args.force)  # before anything is written
    preset, trainer, engine_name = build_new_trainer(
        args, {"eval_every": str(eval_every), "checkpoint_every": str(checkpoint_every)}, print
    )
    train_docs, val_docs = trainer.docs, trainer.val_docs
    if val_docs and not args.quiet:
        say(f"validation: {len(val_docs)} held-out document(s), {len(train_docs)} for training")
    run = None
    if args.out and getattr(args, "writes", True):
        config = run_config(trainer, engine_name, eval_every, checkpoint_every)
        run = rundir.RunDir.create(args.out, args.force, config)
    header = preset.inference_header
    return train_and_sample(args, trainer, run, eval_every, checkpoint_every, header)


def cmd_resume(args) -> int:
    """`train --resume DIR`: the run's saved configs, weights, Adam state, RNGs and step."""
    flag = fixed_flag_given(args)
    if flag:
        raise UsageError(
            f"{flag} cannot change when resuming (the run's saved configuration is used); "
            "start a new run to change it"
        )
    ckpt_path = rundir.check_resumable(args.resume)
    ckpt = ckpt_io.load(ckpt_path)
    preset = get_preset(ckpt.preset)
    train = dataclasses.replace(
        ckpt.train,
        **{k: v for k, v in [("num_steps", args.steps), ("temperature", args.temperature),
                             ("num_samples", args.num_samples)] if v is not None},
    )
    train.validate()
    if train.num_steps < ckpt.step:
        raise UsageError(
            f"--steps {train.num_steps} is fewer than the {ckpt.step} steps this run has done"
        )
    eval_every, checkpoint_every = loop_options(args, ckpt.extra)
    engine_name = args.engine or ckpt.extra.get("engine", DEFAULT_ENGINE)
    kwargs = engine_kwargs(args, engine_name)
    engine_cls = load_engine(engine_name)

    if args.data:
        data_path = Path(args.data)
    elif "data_path" in ckpt.extra:
        data_path = Path(ckpt.extra["data_path"])
    else:
        data_path = default_names_path()
    rng = random.Random(train.seed)  # the same shuffle, hence the same documents in order
    docs, data_sha256 = load_docs(data_path, rng, train.doc_mode)
    recorded = ckpt.extra.get("data_sha256")
    if recorded and recorded != data_sha256 and not args.allow_data_change:
        raise DataError(
            f"data file {str(data_path)!r} is not the one this run trained on (sha256 "
            f"{data_sha256[:12]}... differs from the recorded {recorded[:12]}...); pass the "
            "run's data with --data, or --allow-data-change to continue on this one"
        )
    train_docs, val_docs = split_validation(docs, train.val_fraction)
    dtype = args.dtype or ckpt.extra.get("dtype", "float64")
    trainer = resume_trainer(engine_cls, ckpt, train_docs, val_docs, train=train, dtype=dtype,
                             engine_kwargs=kwargs)
    trainer.extra.update(
        data_sha256=data_sha256, data_path=str(data_path.resolve()),
        eval_every=str(eval_every), checkpoint_every=str(checkpoint_every),
    )
    config = run_config(trainer, engine_name, eval_every, checkpoint_every)
    run = None
    if getattr(args, "writes", True):  # under torchrun, rank 0 alone
        run = rundir.RunDir.reopen(ckpt_path.parent, ckpt.step, config)
    if not args.quiet:
        say(f"resuming {ckpt_path} at step {ckpt.step} of {train.num_steps}")
    header = preset.inference_header
    return train_and_sample(args, trainer, run, eval_every, checkpoint_every, header)


def progress_bar(args, trainer):
    """A tqdm bar on stderr, only for a person watching: stderr is a terminal, no --quiet.
    It appears after 2 seconds, so short runs never show it."""
    if args.quiet or trainer.done or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=trainer.train.num_steps, initial=trainer.step_count, file=sys.stderr,
                unit="step", delay=2.0, dynamic_ncols=True, leave=False)


def train_and_sample(args, trainer, run, eval_every, checkpoint_every, inference_header) -> int:
    """Train to the end (writing through `run`, if any), then print the samples.

    Stdout gets one line per step from the first step not yet done, then the samples; so
    an interrupted run's stdout followed by its resumed run's is the uninterrupted stdout.
    """
    total = trainer.train.num_steps
    bar = progress_bar(args, trainer)

    def out(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line)

    def on_step(result) -> None:
        out(f"step {result.step:4d} / {total:4d} | loss {result.loss:.4f}")
        if run is not None:
            run.log({"step": result.step, "loss": result.loss, "lr": result.lr})
        if bar is not None:
            bar.set_postfix_str(f"loss {result.loss:.4f}", refresh=False)
            bar.update(1)

    def on_eval(step, evaluation, is_best) -> None:
        if not args.quiet:
            line = (f"step {step}: val loss {evaluation.loss:.4f}, "
                    f"{evaluation.bits_per_char:.4f} bits/char" + (" (best)" if is_best else ""))
            bar.write(line, file=sys.stderr) if bar is not None else say(line)
        if run is not None:
            run.log({"step": step, "val_loss": evaluation.loss,
                     "val_bpc": evaluation.bits_per_char})
            if is_best:
                run.save(trainer.checkpoint(), best=True)

    def on_checkpoint(reason: str) -> None:
        if run is not None:
            run.save(trainer.checkpoint())

    stop = StopSignals()
    should_stop = stop.requested
    agree = getattr(trainer.engine, "agree_stop", None)
    if agree is not None:  # the torch engine: under torchrun, all ranks stop at one step

        def should_stop() -> bool:
            # NOTE: a signal caught during the collective is set after its argument was
            # read; it is kept (not overwritten) and put forward at the next step
            agreed = agree(stop.signum or 0)
            stop.signum = stop.signum or agreed or None
            return agreed != 0

    try:
        with stop, warnings.catch_warnings():
            # Array engines warn on overflow before the loss turns NaN; the loop reports a
            # diverged run in one line (TrainingError), so those warnings are only noise.
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) "
                                    "encountered", RuntimeWarning)
            finished = run_training(
                trainer, eval_every=eval_every, checkpoint_every=checkpoint_every,
                on_step=on_step, on_eval=on_eval, on_checkpoint=on_checkpoint,
                should_stop=should_stop)
    except TrainingError as e:
        if run is not None and run.saved_step is not None:
            kept = f"the last good checkpoint, {run.latest} (step {run.saved_step}), is kept"
        else:
            kept = "no checkpoint was written (use --out DIR --checkpoint-every N)"
        raise TrainingError(f"{e}; {kept}") from None
    finally:
        if bar is not None:
            bar.close()
        if run is not None:
            run.close()
    sys.stdout.flush()
    if stop.signum is not None:
        where = f"step {trainer.step_count} of {total}"
        if run is not None:
            saved = f"saved {run.latest}; continue with: microgpt train --resume {run.path}"
        elif not getattr(args, "writes", True):
            saved = "rank 0 saves the run's checkpoint"
        else:
            saved = "nothing was saved (no --out DIR)"
        say(f"microgpt: interrupted by {signal.Signals(stop.signum).name} at {where}; {saved}")
        if agree is not None and not finished:
            # an agreed stop under torchrun: one more collective is a barrier (the first rank
            # to exit makes torchrun terminate the others; none may go before rank 0 saved)
            agree(0)
        return 128 + stop.signum
    if run is not None and not args.quiet:
        say(f"saved {run.latest} and {run.path / rundir.METRICS}")
    if hasattr(trainer.engine, "summary"):  # the torch engine: device, tokens/s, this rank's share
        say(trainer.engine.summary())

    print(f"\n{inference_header}")
    for line in sample_lines(trainer.engine, trainer.tokenizer, trainer.rng,
                             trainer.train.num_samples, trainer.train.temperature):
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
    p.add_argument("--top-k", type=int, metavar="K",
                   help="draw only among the K most likely tokens (default: all)")
    p.add_argument("--prompt", default="", metavar="TEXT",
                   help="every sample starts with this text (default: none)")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="tokens to generate after the prompt at most (default: block_size); "
                   "past the context the window slides over the last block_size tokens")
    p.add_argument("--novel", action="store_true",
                   help="keep only samples that are not training documents (uses the "
                   "fingerprint saved in the checkpoint; no data file needed)")
    p.add_argument("--min-length", type=int, metavar="N",
                   help="keep only samples of at least N characters (prompt included)")
    p.add_argument("--max-length", type=int, metavar="N",
                   help="keep only samples of at most N characters (prompt included)")
    p.add_argument("--max-tries", type=int, metavar="N",
                   help="give up after N generated samples (default: --num-samples, or "
                   f"{TRIES_PER_SAMPLE} times it with --novel/--min-length/--max-length)")
    p.add_argument("--report", action="store_true",
                   help="after the samples, print novelty, duplicates, lengths beside the "
                   "training data's and the mean log-probability per character")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (samples, counts, and the report with --report)")
    p.add_argument("--seed", type=int, metavar="N",
                   help="random seed (default: continue the checkpoint's saved random state)")
    add_model_engine_flags(p)
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    from .api import load

    model = load(args.checkpoint, engine=args.engine, dtype=args.dtype,
                 **engine_kwargs(args, args.engine))
    draw = model.draw(
        args.num_samples, prompt=args.prompt, temperature=args.temperature, top_k=args.top_k,
        max_new_tokens=args.max_new_tokens, novel=args.novel, min_length=args.min_length,
        max_length=args.max_length, max_tries=args.max_tries, seed=args.seed,
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    for i, s in enumerate(draw):
        if not args.json:
            print(f"sample {i + 1:2d}: {s.text}", flush=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if not draw.complete:
        say(f"microgpt: {draw.shortfall()}")
    report = model.report(draw if draw.config.filtered else draw.samples) if args.report else None
    if args.json:
        obj = {"samples": [s.text for s in draw.samples], "requested": draw.config.num_samples,
               "found": len(draw.samples), "tries": draw.tries, "seconds": seconds,
               "cpu_seconds": cpu}
        if report is not None:  # NaN (no samples) is not JSON: null instead
            obj["report"] = {k: None if isinstance(v, float) and v != v else v
                             for k, v in dataclasses.asdict(report).items()}
        print(json.dumps(obj, ensure_ascii=False))
    elif report is not None:
        print()
        for line in format_report(report):
            print(line)
        print(f"time:        {seconds:.3f} s ({cpu:.3f} s CPU) for {draw.tries} tries on the "
              f"{args.engine} engine")
    return 0


# --- eval -----------------------------------------------------------------------------------


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="loss and bits per character of a saved model on a text file",
        description="Score a checkpoint on a file's documents: mean loss per predicted token "
        "(nats) and bits per character, each document scored as in training ([BOS] doc [BOS]).",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a model.safetensors file")
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text file to score")
    p.add_argument("--doc-mode", choices=list(DOC_MODES),
                   help="how the file splits into documents (default: the model's, else lines)")
    p.add_argument("--batch-size", type=int, default=32, metavar="B",
                   help="documents per engine call (default: 32; does not change the result)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_engine_flags(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .api import load

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    model = load(args.checkpoint, engine=args.engine, dtype=args.dtype,
                 **engine_kwargs(args, args.engine))
    mode = args.doc_mode or model.checkpoint.train.doc_mode
    docs = split_documents(read_text(args.data)[0], mode)
    if not docs:
        raise DataError(f"data file {args.data!r} holds no documents")
    missing = model.tokenizer.unknown("".join(docs))
    if missing:
        shown = ", ".join(repr(ch) for ch in missing[:10])
        raise TokenizerError(f"{args.data} has characters not in the model's vocabulary: "
                             f"{shown}; evaluate on text like the training data")
    result = model.evaluate(docs, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "docs": len(docs), "doc_mode": mode}))
    else:
        print(f"loss {result.loss:.4f} | bits/char {result.bits_per_char:.4f} | "
              f"tokens {result.tokens} | docs {len(docs)}")
    return 0


# --- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
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
