"""The command line's shared flags, and how parsed flags become the run library's specs.

Every `microgpt` command that sets up or loads a run (train, sample, eval, studio, sweep)
adds its flags with these functions and turns the parsed arguments into `runs.RunSpec`,
`runs.ResumeSpec` or `runs.EngineSpec` here; from then on only typed specs travel.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import DOC_MODES, PRESETS
from .engine import DEFAULT_ORDER, ENGINES
from .runs import EngineSpec, ResumeSpec, RunSpec

DTYPES = ("float64", "float32", "bfloat16")  # each engine accepts some (Engine.dtypes)
DEFAULT_ENGINE_HELP = f"the fastest installed: {', else '.join(DEFAULT_ORDER)}"


class UsageError(Exception):
    """A mistake in how microgpt was called."""


def terminal_columns() -> int:
    """shutil.get_terminal_size().columns: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help layout, its width found as shutil finds it but without importing
    shutil. NOTE: argparse makes a formatter for every flag added, and shutil brings bz2,
    lzma and zlib: about 1 MB of every command's memory (issue 14 counts a run's 20 MB)."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        width = terminal_columns() if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (its default prints the whole usage first)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):
        self.exit(2, f"microgpt: error: {message}; see '{self.prog} --help'\n")


def require_paths(args, *names: str) -> None:
    """An empty string is no path (Path('') is the current folder): a usage error."""
    for name in names:
        if getattr(args, name, None) == "":
            what = "a run directory" if name in ("out", "resume") else "a file"
            raise UsageError(f"--{name} needs {what}, got ''")


def say(*args) -> None:
    """Tell the user something that is not the program's output (stderr)."""
    print(*args, file=sys.stderr, flush=True)


# --- adding flags ---------------------------------------------------------------------------


def add_setup_flags(
    p, resumed: str = "on --resume", engine_default: str = f"{DEFAULT_ENGINE_HELP}; on --resume"
) -> None:
    """The flags that set up a run (preset, engine, dtype, data, doc mode, validation
    split); `microgpt train` and `microgpt studio` add the same ones."""
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="which original revision to follow (default: final)")
    p.add_argument("--engine", choices=list(ENGINES),
                   help=f"computation engine (default: {engine_default}, the run's)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="float precision of the engine (default: float64, which matches the "
                   f"reference; float32 is faster: c, numpy, torch; {resumed}, the run's)")
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
    """The flags that override the preset's model and training configs."""
    p.add_argument("--steps", type=int, metavar="N", help="training steps (preset: 1000 / 500)")
    p.add_argument("--batch-size", type=int, metavar="B", help="documents per step (default 1)")
    p.add_argument("--seed", type=int, metavar="N", help="random seed (default 42)")
    p.add_argument("--n-embd", type=int, metavar="N", help="embedding width (default 16)")
    p.add_argument("--n-head", type=int, metavar="N", help="attention heads (default 4)")
    p.add_argument("--n-layer", type=int, metavar="N", help="transformer layers (default 1)")
    p.add_argument("--block-size", type=int, metavar="N", help="context length (preset: 16 / 8)")
    p.add_argument("--learning-rate", type=float, metavar="X", help="Adam learning rate (0.01)")


def add_loop_flags(p) -> None:
    """How often a run evaluates and writes checkpoints (train, sweep)."""
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="validation loss and bits/char every N steps (needs --val-fraction; "
                   "default: only after the last step)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write DIR/model.safetensors every N steps (needs --out; default: only "
                   "at the end and on Ctrl-C/SIGTERM)")


def add_after_training_flags(p) -> None:
    """The samples a run prints after training (recorded in its checkpoint, too)."""
    p.add_argument("--temperature", type=float, metavar="X",
                   help="temperature of the samples printed after training (0.5)")
    p.add_argument("--num-samples", type=int, metavar="N",
                   help="samples printed after training (20)")


def add_model_engine_flags(p) -> None:
    """--engine, --dtype and the torch flags of the commands that load a saved model."""
    p.add_argument("--engine", choices=list(ENGINES),
                   help=f"computation engine (default: {DEFAULT_ENGINE_HELP})")
    p.add_argument("--dtype", choices=DTYPES,
                   help="float precision of the engine (default: float64)")
    add_device_flags(p)


def add_device_flags(p, compile_flag: bool = False) -> None:
    """Flags of the torch engine (they are refused with another engine)."""
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"],
                   help="torch engine only: where to compute (default: auto = CUDA, else CPU)")
    if compile_flag:
        p.add_argument("--compile", action="store_true",
                       help="torch engine only: torch.compile the training step (slow start)")


# --- parsed flags -> specs --------------------------------------------------------------------


def engine_spec(args) -> EngineSpec:
    return EngineSpec(name=args.engine, dtype=args.dtype, device=args.device,
                      compile=bool(getattr(args, "compile", False)))  # fmt: skip


def run_spec(args, **overrides) -> RunSpec:
    """A new run's spec from the flags of add_setup_flags and add_config_flags."""
    fields = dict(
        preset=args.preset or "final", data=args.data, engine=engine_spec(args),
        n_embd=args.n_embd, n_head=args.n_head, n_layer=args.n_layer,
        block_size=args.block_size, learning_rate=args.learning_rate, steps=args.steps,
        batch_size=args.batch_size, seed=args.seed, doc_mode=args.doc_mode,
        val_fraction=args.val_fraction,
        temperature=getattr(args, "temperature", None),
        num_samples=getattr(args, "num_samples", None),
        eval_every=getattr(args, "eval_every", None) or 0,
        checkpoint_every=getattr(args, "checkpoint_every", None) or 0,
    )  # fmt: skip
    return RunSpec(**{**fields, **overrides})


# Flags that shape the run itself; resuming uses the run's saved values and refuses these.
FIXED_ON_RESUME = ("preset", "batch_size", "seed", "n_embd", "n_head", "n_layer", "block_size",
                   "learning_rate", "doc_mode", "val_fraction", "out", "force")


def fixed_flag_given(args) -> str | None:
    """The first flag of FIXED_ON_RESUME that `args` gives (as "--name"), else None."""
    for name in FIXED_ON_RESUME:
        value = getattr(args, name, None)
        if value is not None and value is not False:  # 0 is a value
            return "--" + name.replace("_", "-")
    return None


def resume_spec(args, run: str, action: str = "resuming") -> ResumeSpec:
    """A resumed run's spec; a flag that would change the run itself is a UsageError."""
    flag = fixed_flag_given(args)
    if flag:
        raise UsageError(
            f"{flag} cannot change when {action} (the run's saved configuration is used); "
            "start a new run to change it"
        )
    return ResumeSpec(
        run=run, steps=args.steps, temperature=getattr(args, "temperature", None),
        num_samples=getattr(args, "num_samples", None), data=args.data,
        allow_data_change=bool(getattr(args, "allow_data_change", False)),
        engine=engine_spec(args), eval_every=getattr(args, "eval_every", None),
        checkpoint_every=getattr(args, "checkpoint_every", None),
    )  # fmt: skip
