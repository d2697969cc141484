"""`microgpt train`, `microgpt sample` and `microgpt eval`: flags in, specs to the run
library (runs.py), its results out.

Stdout carries exactly what the original program prints (so `diff` against its output is
empty); everything else (where files went, warnings) goes to stderr. A user's mistake ends
with one line on stderr and exit status 2 (see __main__); tracebacks are for bugs. The
engine the user chose is imported only once they chose it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import warnings

from . import checkpoint as ckpt_io
from . import distributed, rundir, runs
from .config import DOC_MODES
from .draw import TRIES_PER_SAMPLE
from .flags import (
    UsageError,
    add_after_training_flags,
    add_config_flags,
    add_device_flags,
    add_loop_flags,
    add_model_engine_flags,
    add_setup_flags,
    engine_spec,
    require_paths,
    resume_spec,
    run_spec,
    say,
)
from .report import format_report
from .sample import sample_lines

# --- train ----------------------------------------------------------------------------------


def add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and print samples",
        description="Train a model. The defaults reproduce the original microgpt run exactly.",
    )
    add_setup_flags(p)
    add_loop_flags(p)
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR from its latest checkpoint, with its saved "
                   "configs; the result is bit-identical to an uninterrupted run")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: accept a data file whose sha256 differs from the run's")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no progress messages on stderr")
    add_config_flags(p)
    add_after_training_flags(p)
    p.add_argument("--out", metavar="DIR",
                   help="run directory: config.json, metrics.jsonl, model.safetensors (latest) "
                   "and best.safetensors (lowest validation loss) are written there")
    p.add_argument("--force", action="store_true",
                   help="allow --out to point at a directory that already holds a run")
    add_device_flags(p, compile_flag=True)
    p.set_defaults(func=cmd_train)
def cmd_train(args) -> int:
    """Train; under torchrun every rank trains, and only rank 0 prints and writes files."""
    launch = distributed.from_env()
    if args.allow_data_change and not args.resume:
        raise UsageError("--allow-data-change only applies with --resume DIR")
    require_paths(args, "resume", "out", "data")
    spec = resume_spec(args, args.resume) if args.resume else run_spec(args)
    writes = launch.is_main  # under torchrun, rank 0 alone writes files and prints
    if launch.distributed:
        distributed_checks(launch, spec)
    with contextlib.ExitStack() as stack:
        if not writes:
            null = stack.enter_context(open(os.devnull, "w"))
            stack.enter_context(contextlib.redirect_stdout(null))
        if args.resume:
            run = runs.resume(spec, write=writes)
        else:
            run = runs.start(spec, out=args.out, force=args.force, show=print, write=writes)
        stack.callback(run.close)  # e.g. Ctrl-C before training: the folder as it was
        if args.quiet:
            pass
        elif args.resume:
            say(f"resuming {run.resumed_from} at step {run.trainer.step_count} of "
                f"{run.trainer.train.num_steps}")  # fmt: skip
        elif run.trainer.val_docs:
            say(f"validation: {len(run.trainer.val_docs)} held-out document(s), "
                f"{len(run.trainer.docs)} for training")  # fmt: skip
        return train_and_sample(args, run, writes)


def distributed_checks(launch: distributed.Launch, spec) -> None:
    """torchrun runs the torch engine only, with at least one sequence per process."""
    if isinstance(spec, runs.ResumeSpec):
        ckpt = ckpt_io.load(rundir.check_resumable(spec.run))
        engine_name, batch_size = spec.engine.name or ckpt.record.engine, ckpt.train.batch_size
    else:
        engine_name, batch_size = spec.engine.name, spec.configs()[3].batch_size
    if engine_name != "torch":
        raise UsageError(
            f"torchrun started {launch.world_size} processes; distributed training needs "
            "--engine torch"
        )
    distributed.check_batch(launch, batch_size)
    if launch.is_main:
        say(distributed.describe(launch, batch_size))


def progress_bar(args, trainer):
    """A tqdm bar on stderr, only for a person watching: stderr is a terminal, no --quiet.
    It appears after 2 seconds, so short runs never show it."""
    if args.quiet or trainer.done or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=trainer.train.num_steps, initial=trainer.step_count, file=sys.stderr,
                unit="step", delay=2.0, dynamic_ncols=True, leave=False)


def train_and_sample(args, run: runs.Run, writes: bool) -> int:
    """Train to the end (writing through the run's directory, if any), then print samples.

    Stdout gets one line per step from the first step not yet done, then the samples; so
    an interrupted run's stdout followed by its resumed run's is the uninterrupted stdout.
    """
    trainer = run.trainer
    total = trainer.train.num_steps
    bar = progress_bar(args, trainer)

    def out(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line)

    def on_step(result) -> None:
        out(f"step {result.step:4d} / {total:4d} | loss {result.loss:.4f}")
        if bar is not None:
            bar.set_postfix_str(f"loss {result.loss:.4f}", refresh=False)
            bar.update(1)

    def on_eval(step, evaluation, is_best) -> None:
        if not args.quiet:
            line = (f"step {step}: val loss {evaluation.loss:.4f}, "
                    f"{evaluation.bits_per_char:.4f} bits/char" + (" (best)" if is_best else ""))
            bar.write(line, file=sys.stderr) if bar is not None else say(line)

    stop = runs.StopSignals()

    def should_stop() -> bool:
        # NOTE: under torchrun all ranks must stop at one step (Engine.agree_stop); a signal
        # caught during that collective is kept (not overwritten) and put forward next step
        agreed = trainer.engine.agree_stop(stop.signum or 0)
        stop.signum = stop.signum or agreed or None
        return agreed != 0

    try:
        with stop, warnings.catch_warnings():
            # Array engines warn on overflow before the loss turns NaN; the loop reports a
            # diverged run in one line (TrainingError), so those warnings are only noise.
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) "
                                    "encountered", RuntimeWarning)
            finished = runs.train(run, on_step=on_step, on_eval=on_eval, should_stop=should_stop)
    finally:
        if bar is not None:
            bar.close()
    sys.stdout.flush()
    if stop.signum is not None:
        where = f"step {trainer.step_count} of {total}"
        if run.dir is not None:
            saved = f"saved {run.dir.latest}; continue with: microgpt train --resume {run.dir.path}"
        elif not writes:
            saved = "rank 0 saves the run's checkpoint"
        else:
            saved = "nothing was saved (no --out DIR)"
        say(f"microgpt: interrupted by {signal.Signals(stop.signum).name} at {where}; {saved}")
        if not finished:
            # an agreed stop under torchrun: one more collective is a barrier (the first rank
            # to exit makes torchrun terminate the others; none may go before rank 0 saved)
            trainer.engine.agree_stop(0)
        return 128 + stop.signum
    if run.dir is not None and not args.quiet:
        say(f"saved {run.dir.latest} and {run.dir.path / rundir.METRICS}")
    summary = trainer.engine.summary()
    if summary:
        say(summary)

    print(f"\n{run.preset.inference_header}")
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
    require_paths(args, "checkpoint")
    model = runs.load_model(args.checkpoint, engine_spec(args))
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
              f"{model.engine.name} engine")
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
    """Scored through `Model.evaluate`, as `microgpt.load(ckpt).evaluate(path)` scores."""
    require_paths(args, "checkpoint", "data")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {args.batch_size}")
    model = runs.load_model(args.checkpoint, engine_spec(args))
    mode = args.doc_mode or model.checkpoint.train.doc_mode
    result = model.evaluate(args.data, doc_mode=mode, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "doc_mode": mode}))
    else:
        print(f"loss {result.loss:.4f} | bits/char {result.bits_per_char:.4f} | "
              f"tokens {result.tokens} | docs {result.docs}")
    return 0
