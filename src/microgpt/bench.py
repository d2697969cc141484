"""`microgpt bench`: the engines side by side, in one run, on this machine.

Measurements, not tests: nothing here asserts a time. Every training time is printed beside
the loss it reached, so speed is never reported without the result. Each number is the
minimum over several repeats (the least disturbed run), with one BLAS thread: on matrices
this small, extra BLAS threads only add synchronisation, and on a busy machine they can
slow tiny products down many times.

The engines measured are the rows of BENCH_ENGINES; a new engine is one more line there.
Standard library only: engines are imported through `load_engine`, once chosen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, ModelConfig, get_preset
from .data import DOC_MODES, default_names_path
from .engine import ENGINES, EngineError, load_engine
from .init import init_params
from .runs import EngineSpec, RunSpec, start
from .sample import generate


@dataclass(frozen=True)
class BenchRow:
    """One row of the table: an engine, its dtype and, for torch, its device."""

    engine: str
    dtype: str = "float64"
    device: str | None = None  # torch only: "cpu" or "cuda"

    @property
    def label(self) -> str:
        return "/".join(x for x in (self.engine, self.dtype, self.device) if x)

    @property
    def kwargs(self) -> dict:
        """Engine constructor keywords: the device, and never join a torchrun job."""
        return {"device": self.device, "distributed": False} if self.device else {}

    @property
    def spec(self) -> EngineSpec:
        return EngineSpec(name=self.engine, dtype=self.dtype, device=self.device)


@dataclass(frozen=True)
class Timing:
    """The fastest of several runs: wall-clock and the process's CPU seconds."""

    wall: float
    cpu: float

    def fastest(self, other: Timing | None) -> Timing:
        """The element-wise minimum (other may be None: no time yet)."""
        if other is None:
            return self
        return Timing(min(self.wall, other.wall), min(self.cpu, other.cpu))


@dataclass(frozen=True)
class TrainTiming:
    """Training `steps` steps: how long, how many predicted tokens, and the losses reached."""

    time: Timing
    steps: int
    tokens: int
    check_loss: float | None  # the loss at the step every engine reports
    last_loss: float


@dataclass(frozen=True)
class SampleTiming:
    """Batch-1 decoding with the KV cache."""

    time: Timing
    tokens: int


@dataclass(frozen=True)
class Measurement:
    """One fresh process's measurements of one row; sampling and the larger config only on
    the last round (None otherwise, and `large` always None for the slow engines)."""

    default: TrainTiming
    sampling: SampleTiming | None = None
    large: TrainTiming | None = None


# The rows of the table, in order. The first row is the baseline of the ratio. The CUDA rows
# are skipped, with the reason, where torch finds no GPU (or torch is not installed).
BENCH_ENGINES: list[BenchRow] = [
    BenchRow("ref", "float64"),
    BenchRow("numpy", "float64"),
    BenchRow("numpy", "float32"),
    BenchRow("torch", "float64", "cpu"),
    BenchRow("torch", "float32", "cpu"),
    BenchRow("torch", "float64", "cuda"),
    BenchRow("torch", "float32", "cuda"),
    BenchRow("torch", "bfloat16", "cuda"),
]
# Engines too slow for the whole default run and the larger config: they train on
# --ref-steps steps only and skip the larger config.
SLOW_ENGINES = {"ref"}
# The larger config of the issue: n_layer 4, n_embd 128, n_head 4, block 64, batch 12.
LARGE_MODEL = ModelConfig(n_layer=4, n_embd=128, n_head=4, block_size=64)
LARGE_BATCH = 12
# NOTE: the preset's learning rate (0.01) makes this wider, deeper model diverge within a few
# steps (the loss climbs past 17, then float32 overflows); 1e-3 trains it.
LARGE_LEARNING_RATE = 1e-3
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time the engines side by side (training, sampling, a larger config)",
        description="Benchmark every engine on this machine in one run: per-step training "
        "time on the default workload with the loss reached, batch-1 sampling speed with "
        "the KV cache, and training tokens/s on a larger config. Prints a table and one "
        "JSON line. Times are the minimum over --repeats runs, with one BLAS thread.",
    )
    p.add_argument(
        "--data", metavar="PATH", help="the default workload's data (default: the names dataset)"
    )
    p.add_argument(
        "--large-data",
        metavar="PATH",
        help="data for the larger config (default: the same as --data)",
    )
    p.add_argument(
        "--large-docs",
        choices=DOC_MODES,
        default="lines",
        help="how --large-data splits into documents (default: lines; "
        "`paragraphs` suits tinyshakespeare)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="runs per measurement; the minimum is reported (default 5)",
    )
    p.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="training steps for fast engines (default: the preset's 1000)",
    )
    p.add_argument(
        "--ref-steps",
        type=int,
        metavar="N",
        help="training steps for the reference engine (default 30)",
    )
    p.add_argument(
        "--samples", type=int, metavar="N", help="samples drawn for the sampling speed (default 20)"
    )
    p.add_argument(
        "--large-steps",
        type=int,
        metavar="N",
        help="training steps on the larger config (default 10)",
    )
    p.add_argument(
        "--engines",
        metavar="LIST",
        help="comma-separated engine[:dtype[:device]] rows to run, e.g. "
        "ref,numpy:float32,torch:float32:cuda (default: "
        + ",".join(":".join(r.label.split("/")) for r in BENCH_ENGINES)
        + "; the device is torch's, cpu unless given)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in seconds (few steps, one repeat): checks that the bench "
        "works, its numbers mean little",
    )
    p.set_defaults(func=cmd_bench)


@dataclass
class BenchSettings:
    data: Path
    large_data: Path
    large_docs: str
    repeats: int
    steps: int | None  # None: the preset's full run
    ref_steps: int
    samples: int
    large_steps: int
    engines: list[BenchRow]


def settings_from_args(args) -> BenchSettings:
    quick = args.quick

    def pick(value, default, quick_default):
        value = value if value is not None else (quick_default if quick else default)
        if value < 1:
            raise ConfigError(f"bench counts must be positive integers, got {value}")
        return value

    data = Path(args.data) if args.data else default_names_path()
    engines = BENCH_ENGINES
    if args.engines:
        engines = []
        for item in args.engines.split(","):
            name, dtype, device = (item.strip().split(":") + ["", ""])[:3]
            if device and name != "torch":
                raise ConfigError(f"--engines {item!r}: only the torch engine takes a device")
            device = device or ("cpu" if name == "torch" else "")
            engines.append(BenchRow(name, dtype or "float64", device or None))
    return BenchSettings(
        data=data,
        large_data=Path(args.large_data) if args.large_data else data,
        large_docs=args.large_docs,
        repeats=pick(args.repeats, 5, 1),
        steps=pick(args.steps, None, 20) if (args.steps is not None or quick) else None,
        ref_steps=pick(args.ref_steps, 30, 3),
        samples=pick(args.samples, 20, 3),
        large_steps=pick(args.large_steps, 10, 2),
        engines=engines,
    )


def limit_blas_threads() -> str:
    """Ask for one BLAS thread; say how it was done (it must happen before NumPy loads)."""
    if "numpy" not in sys.modules:
        for var in BLAS_ENV:
            os.environ[var] = "1"
        return "1 (" + "=".join(BLAS_ENV) + "=1)"
    try:
        from threadpoolctl import threadpool_limits  # optional
    except ImportError:
        return "not limited (NumPy was already loaded and threadpoolctl is not installed)"
    threadpool_limits(1)
    return "1 (threadpoolctl)"


# --- measurements ----------------------------------------------------------------------------


def limit_torch_threads() -> None:
    """One intra-op thread for torch on the CPU, as for BLAS (torch is loaded by now)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def time_training(
    row: BenchRow,
    docs_path: Path,
    model: ModelConfig | None,
    batch_size: int,
    steps: int | None,
    check_step: int,
    repeats: int,
    doc_mode: str = "lines",
    learning_rate: float | None = None,
) -> tuple[TrainTiming, object]:
    """Train the first `steps` steps of the final preset's run (seed 42), `repeats` times.

    The run is always the preset's whole 1000-step run (its learning-rate schedule decays
    over 1000 steps); a shorter measurement stops early, so the loss at any step is the
    same whichever engine reached it, and equals the reference output's line for that step.
    Returns the fastest run's timing and the trainer of the last run (for sampling).
    """
    load_engine(row.engine)
    limit_torch_threads()
    model = model or get_preset("final").model
    spec = RunSpec(
        data=str(docs_path), engine=row.spec, n_embd=model.n_embd, n_head=model.n_head,
        n_layer=model.n_layer, block_size=model.block_size, batch_size=batch_size,
        doc_mode=doc_mode, learning_rate=learning_rate,
    )  # fmt: skip
    best = None
    for _ in range(repeats):
        trainer = start(spec).trainer
        n = trainer.train.num_steps if steps is None else min(steps, trainer.train.num_steps)
        check_loss, tokens = None, 0
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            result = trainer.step()
            tokens += result.tokens
            if result.step == check_step:
                check_loss = result.loss
        elapsed = Timing(time.perf_counter() - start_wall, time.process_time() - start_cpu)
        best = elapsed.fastest(best)
    return TrainTiming(best, n, tokens, check_loss, result.loss), trainer


def time_sampling(trainer, samples: int, repeats: int) -> SampleTiming:
    """Batch-1 decoding with the KV cache: tokens decoded and the fastest (wall, cpu)."""
    engine, tokenizer = trainer.engine, trainer.tokenizer
    block_size = engine.config.block_size
    best, tokens = None, 0
    for _ in range(repeats):
        rng = random.Random(0)  # the same draws every repeat, so the same work
        tokens = 0
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(samples):
            out = generate(engine, tokenizer, rng, temperature=0.5)
            tokens += min(len(out) + 1, block_size)  # one decode per token, plus the final BOS
        elapsed = Timing(time.perf_counter() - start_wall, time.process_time() - start_cpu)
        best = elapsed.fastest(best)
    return SampleTiming(best, tokens)


def in_fresh_process(fn, *args):
    """fn(*args), computed in a new Python interpreter; its result comes back here.

    NOTE: every measurement runs in a process of its own, as `microgpt train --engine X`
    would: the reference engine makes ~10^5 Python objects per step, Python's garbage
    collector walks every object alive in the process, and with torch imported (170,000
    objects more) the same reference step takes twice as long. A fresh process keeps one
    engine's libraries from slowing another engine down.
    """
    import multiprocessing  # only when measuring: `microgpt train` imports this module too

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def measure(
    spec: BenchRow, s: BenchSettings, steps, check_step: int, last_round: bool
) -> Measurement:
    """One timed run of the default workload; on the last round, also the sampling speed of
    the model just trained and the larger config's training speed (not for slow engines)."""
    default, trainer = time_training(spec, s.data, None, 1, steps, check_step, 1)
    if not last_round:
        return Measurement(default)
    sampling = time_sampling(trainer, s.samples, s.repeats)
    if spec.engine in SLOW_ENGINES:  # the slow engines would take hours: not measured
        return Measurement(default, sampling)
    large, _ = time_training(
        spec, s.large_data, LARGE_MODEL, LARGE_BATCH, s.large_steps, 0,
        s.repeats, doc_mode=s.large_docs, learning_rate=LARGE_LEARNING_RATE,
    )  # fmt: skip
    return Measurement(default, sampling, large)


def run_bench(s: BenchSettings, say=print) -> dict:
    """Measure every engine row; return the JSON-ready result.

    Times are wall-clock ("s_per_step") and the measuring process's CPU time
    ("cpu_s_per_step"); on a quiet machine they agree, on a busy one the CPU time is the less
    disturbed of the two.
    "speedup" is the first row's wall time per step over this row's.

    NOTE: the default-workload runs of the engines take turns, round after round (ref, numpy,
    ..., ref, numpy, ...), and each engine keeps its fastest round: a shared machine's speed
    drifts by tens of percent over seconds, and measuring one engine's repeats after the
    other's would put that drift into the ratio. Each run is a fresh process (see
    in_fresh_process).
    """
    for spec in s.engines:
        if spec.engine not in ENGINES:
            raise ConfigError(
                f"unknown engine {spec.engine!r} in --engines; choose from {', '.join(ENGINES)}"
            )
    rows, live = [], []  # every row; the (spec, row) pairs whose engine loads here
    for spec in s.engines:
        row: dict = {"engine": spec.engine, "dtype": spec.dtype}
        if spec.device:
            row["device"] = spec.device
        rows.append(row)
        try:
            engine_cls = load_engine(spec.engine)
            # a throwaway 1-weight-matrix model: checks the dtype and the device up front
            probe = ModelConfig(n_layer=1, n_embd=4, n_head=1, block_size=2)
            rng = random.Random(0)
            engine_cls(probe, get_preset("final").optim, 2, init_params(probe, 2, rng),
                       dtype=spec.dtype, **spec.kwargs)  # fmt: skip
        except EngineError as e:  # e.g. torch not installed, no GPU: report it, measure the rest
            row["skipped"] = str(e)
            say(f"  {spec.label}: skipped ({e})")
            continue
        live.append((spec, row))

    def check_step(spec: BenchRow) -> tuple[int | None, int]:
        """(steps to train, the step whose loss is reported beside every engine's)."""
        steps = s.ref_steps if spec.engine in SLOW_ENGINES else s.steps
        return steps, s.ref_steps if steps is None else min(s.ref_steps, steps)

    # the default workload, the engines taking turns; after the last round's, in the same
    # process, sampling and the larger config
    fastest: dict[int, Timing] = {}  # row index -> the fastest default run so far
    last: dict[int, Measurement] = {}  # row index -> the last round's measurement
    for r in range(s.repeats):
        last_round = r == s.repeats - 1
        for i, (spec, _) in enumerate(live):
            what = "the default run" + (", sampling, the larger config" if last_round else "")
            say(f"  {spec.label}: {what} (round {r + 1} of {s.repeats}) ...")
            m = in_fresh_process(measure, spec, s, *check_step(spec), last_round)
            fastest[i] = m.default.time.fastest(fastest.get(i))
            last[i] = m
    base = None
    for i, (spec, row) in enumerate(live):
        m, best = last[i], fastest[i]
        n = m.default.steps
        base = base or (best.wall / n, best.cpu / n)
        row["train"] = {
            "steps": n,
            "s_per_step": best.wall / n,
            "cpu_s_per_step": best.cpu / n,
            "tokens_per_s": m.default.tokens / best.wall,
            "loss_at_step": {"step": check_step(spec)[1], "loss": m.default.check_loss},
            "final_loss": m.default.last_loss,
            "speedup": base[0] / (best.wall / n),
            "cpu_speedup": base[1] / (best.cpu / n),
        }
        smp = m.sampling
        row["sample"] = {
            "tokens": smp.tokens,
            "tokens_per_s": smp.tokens / smp.time.wall,
            "cpu_tokens_per_s": smp.tokens / smp.time.cpu,
        }
        row["large"] = None
        if m.large is not None:
            big = m.large
            row["large"] = {
                "steps": big.steps,
                "s_per_step": big.time.wall / big.steps,
                "cpu_s_per_step": big.time.cpu / big.steps,
                "tokens_per_s": big.tokens / big.time.wall,
                "cpu_tokens_per_s": big.tokens / big.time.cpu,
                "final_loss": big.last_loss,
            }
    return {"engines": rows}


# --- report ------------------------------------------------------------------------------------


def format_table(result: dict) -> list[str]:
    """The human-readable table: one line per engine row."""
    w = result["workload"]
    check = f"loss@{w['check_step']}"
    lines = [
        f"default workload: final preset on {w['data']}, batch 1, seed 42",
        f"larger config: n_layer 4, n_embd 128, n_head 4, block 64, batch 12, "
        f"lr {LARGE_LEARNING_RATE:g}, on {w['large_data']} ({w['large_docs']})",
        f"BLAS threads: {result['blas_threads']}",
        f"each time is the minimum over {result['repeats']} run(s), each in a fresh process, "
        "the engines taking turns; wall clock, and the process's CPU time in ()",
        "",
        f"{'engine':<20} {'steps':>5} {'us/step':>20} {'speedup':>8} {check:>8} "
        f"{'loss':>7} {'sample tok/s':>17} {'large tok/s':>15} {'loss':>7}",
    ]
    for row in result["engines"]:
        label = "/".join(row[k] for k in ("engine", "dtype", "device") if k in row)
        if "skipped" in row:
            lines.append(f"{label:<20} skipped: {row['skipped']}")
            continue
        t, smp, big = row["train"], row["sample"], row["large"]
        us = f"{t['s_per_step'] * 1e6:.1f} ({t['cpu_s_per_step'] * 1e6:.1f})"
        tok = f"{smp['tokens_per_s']:.0f} ({smp['cpu_tokens_per_s']:.0f})"
        if big:
            large = f"{big['tokens_per_s']:.0f} ({big['cpu_tokens_per_s']:.0f})"
            large_loss = f"{big['final_loss']:.4f}"
        else:
            large, large_loss = "-", "-"
        lines.append(
            f"{label:<20} {t['steps']:>5} {us:>20} {t['speedup']:>7.3g}x "
            f"{t['loss_at_step']['loss']:>8.4f} {t['final_loss']:>7.4f} {tok:>17} "
            f"{large:>15} {large_loss:>7}"
        )
    return lines


def cmd_bench(args) -> int:
    import platform  # here: `microgpt train` imports this module too, for its parser

    blas = limit_blas_threads()
    s = settings_from_args(args)
    for path in (s.data, s.large_data):
        if not path.is_file():
            raise ConfigError(f"no data file at {str(path)!r}; pass --data / --large-data PATH")
    print(
        f"microgpt bench: {len(s.engines)} engine row(s), {s.repeats} repeat(s) each",
        file=sys.stderr,
        flush=True,
    )
    result = run_bench(s, say=lambda *a: print(*a, file=sys.stderr, flush=True))
    result.update(
        blas_threads=blas,
        repeats=s.repeats,
        quick=bool(args.quick),
        workload={
            "data": str(s.data),
            "check_step": s.ref_steps,
            "large_data": str(s.large_data),
            "large_docs": s.large_docs,
            "large_config": {
                **dataclasses.asdict(LARGE_MODEL),
                "batch_size": LARGE_BATCH,
                "learning_rate": LARGE_LEARNING_RATE,
            },
        },
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    )
    for line in format_table(result):
        print(line)
    print(json.dumps({"bench": result}, default=list))
    return 0
