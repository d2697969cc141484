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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, ModelConfig, get_preset
from .data import DOC_MODES, default_names_path, read_text, split_documents
from .engine import ENGINES, EngineError, load_engine
from .evaluate import evaluate
from .init import init_params
from .runs import EngineSpec, RunSpec, start
from .sample import generate_samples
from .train import CHUNK_STEPS, multi_step


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
    """One fresh process's measurements of one row; sampling, the larger config and the
    trained model's loss over the whole data file only on the last round (None otherwise;
    `large` and `quality` always None for the slow engines)."""

    default: TrainTiming
    sampling: SampleTiming | None = None
    large: TrainTiming | None = None
    quality: float | None = None  # the default run's model: its loss over all the documents


# The rows of the table, in order. The first row is the baseline of the ratio. The CUDA rows
# are skipped, with the reason, where torch finds no GPU (or torch is not installed).
BENCH_ENGINES: list[BenchRow] = [
    BenchRow("ref", "float64"),
    BenchRow("c", "float64"),
    BenchRow("c", "float32"),
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
# Batched training, timed per sample (a step's time / BATCH): the preset's run with
# --batch-size BATCH. Its rows are measured where their engine loads.
BATCH = 16
BATCHED_ROWS = [BenchRow("c", "float32"), BenchRow("numpy", "float32")]
# Time to the original's quality: a model whose loss over all the documents of the data file
# is at most the original's 1000-step model's (`microgpt eval` of it on names.txt).
QUALITY_LOSS = 2.3656
# The batched rows' schedules, tried in this order (the preset's linear decay over that many
# steps); the first whose model reaches QUALITY_LOSS is the row's time to quality.
QUALITY_LADDER = (100, 150, 200, 300, 400, 600, 1000)
# `microgpt train` as a user runs it, in a process of its own: the default run (its wall
# time and peak memory) and a longer one; per step: the difference over the extra steps.
PROCESS_STEPS = (1000, 3000)
PROCESS_ENGINES = ("c", "numpy")  # (torch's start-up alone is seconds: not measured so)
# Where the C engine and NumPy (BLAS) cross: tokens/s of the larger config at these widths.
CROSSOVER_WIDTHS = (32, 64, 128)
CROSSOVER_ROWS = [BenchRow("c", "float32"), BenchRow("numpy", "float32"),
                  BenchRow("c", "float64"), BenchRow("numpy", "float64")]  # fmt: skip


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
        "--samples", type=int, metavar="N",
        help="samples drawn per call for the sampling speed (default 1000; 20 on the "
        "reference engine)",
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
    quick: bool = False


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
        samples=pick(args.samples, 1000, 50),
        large_steps=pick(args.large_steps, 10, 2),
        engines=engines,
        quick=quick,
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
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        results = train_to(trainer, n)
        elapsed = Timing(time.perf_counter() - start_wall, time.process_time() - start_cpu)
        best = elapsed.fastest(best)
    check_loss = next((r.loss for r in results if r.step == check_step), None)
    tokens = sum(r.tokens for r in results)
    return TrainTiming(best, n, tokens, check_loss, results[-1].loss), trainer


def train_to(trainer, n: int) -> list:
    """Train up to step n as `microgpt train` does (train.run): several steps per engine call
    where the engine takes them (train.multi_step), else one at a time. The StepResults."""
    multi, results = multi_step(trainer.engine), []
    while trainer.step_count < n:
        if multi:
            done = trainer.steps(min(CHUNK_STEPS, n - trainer.step_count))
            results += done or [trainer.step()]  # none done: it diverged, and step() says so
        else:
            results.append(trainer.step())
    return results


def time_sampling(trainer, samples: int, repeats: int) -> SampleTiming:
    """Batch-1 decoding with the KV cache, as `microgpt sample` draws (whole samples in the
    engine where it makes them): tokens decoded, and the fastest (wall, cpu) of `repeats`
    runs, each of at least `samples` samples and a quarter of a second."""
    engine, tokenizer = trainer.engine, trainer.tokenizer
    best, tokens = None, 0
    for _ in range(repeats):
        rng = random.Random(0)  # the same draws every repeat, so the same work
        tokens = 0
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        while not tokens or time.perf_counter() - start_wall < 0.25:
            made = generate_samples(engine, tokenizer, rng, samples, temperature=0.5)
            tokens += sum(s.predicted for s in made)  # one decode per draw, the final BOS too
        elapsed = Timing(time.perf_counter() - start_wall, time.process_time() - start_cpu)
        best = elapsed.fastest(best)
    return SampleTiming(best, tokens)


def quality(trainer, data: Path) -> float:
    """The trained model's loss over every document of `data`, as `microgpt eval` scores."""
    docs = split_documents(read_text(data)[0], trainer.train.doc_mode)
    return evaluate(trainer.engine, trainer.tokenizer, docs).loss


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
    slow = spec.engine in SLOW_ENGINES
    sampling = time_sampling(trainer, min(s.samples, 20) if slow else s.samples, s.repeats)
    if spec.engine in SLOW_ENGINES:  # the slow engines would take hours: not measured
        return Measurement(default, sampling)
    # the whole default run's model (not a --quick run's few steps) against the original's
    score = quality(trainer, s.data) if default.steps == trainer.train.num_steps else None
    large, _ = time_training(
        spec, s.large_data, LARGE_MODEL, LARGE_BATCH, s.large_steps, 0,
        s.repeats, doc_mode=s.large_docs, learning_rate=LARGE_LEARNING_RATE,
    )  # fmt: skip
    return Measurement(default, sampling, large, score)


def measure_batched(spec: BenchRow, s: BenchSettings) -> dict:
    """A batched row: the preset's run at batch BATCH, timed per sample; then its time to the
    original's quality, trying QUALITY_LADDER's schedules in turn."""
    steps = s.steps  # None: the whole run
    timing, _ = time_training(spec, s.data, None, BATCH, steps, 0, s.repeats)
    samples = timing.steps * BATCH
    row = {"engine": spec.engine, "dtype": spec.dtype, "batch_size": BATCH,
           "steps": timing.steps, "s_per_sample": timing.time.wall / samples,
           "cpu_s_per_sample": timing.time.cpu / samples, "final_loss": timing.last_loss,
           "quality": None}  # fmt: skip
    if s.quick:
        return row
    for n in QUALITY_LADDER:
        run = start(RunSpec(data=str(s.data), engine=spec.spec, batch_size=BATCH, steps=n))
        started = time.perf_counter()
        train_to(run.trainer, n)
        seconds = time.perf_counter() - started
        loss = quality(run.trainer, s.data)
        if loss <= QUALITY_LOSS:
            row["quality"] = {"loss": loss, "seconds": seconds, "estimated": False,
                              "schedule": f"{n} steps, batch {BATCH}, lr 0.01 decaying "
                              "linearly to 0 (the final preset's)"}  # fmt: skip
            break
    return row


# Runs a command (argv[1:]) with stdout to /dev/null and prints, as JSON, its wall time, CPU
# time, peak memory (ru_maxrss) and exit status. NOTE: through this small interpreter, not
# straight from the bench: Linux counts a process's peak memory from the moment it was
# forked, and the bench process itself is larger than a `microgpt train` run.
MEASURE_CHILD = """
import json, os, resource, sys, time
start = time.perf_counter()
actions = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - start, usage.ru_utime + usage.ru_stime,
                  usage.ru_maxrss, os.waitstatus_to_exitcode(status)]))
"""


def measure_process(spec: BenchRow, s: BenchSettings) -> dict:
    """`microgpt train --engine E --dtype D` as a user runs it, each a process of its own:
    the default run's wall and CPU time and peak memory, and the time per step from the
    difference of two run lengths (start-up, reading the data and sampling cancel)."""
    short, long = (20, 60) if s.quick else PROCESS_STEPS
    out = {}
    for steps in (short, long):
        command = [sys.executable, "-m", "microgpt", "train", "--engine", spec.engine,
                   "--dtype", spec.dtype, "--data", str(s.data), "--steps", str(steps)]  # fmt: skip
        proc = subprocess.run([sys.executable, "-S", "-c", MEASURE_CHILD, *command],
                              capture_output=True, text=True)  # fmt: skip
        try:
            wall, cpu, maxrss, code = json.loads(proc.stdout)
        except ValueError:
            code = proc.returncode
        if code != 0:
            raise ConfigError(f"`microgpt {' '.join(command[3:])}` failed: "
                              f"{proc.stderr.strip()[-300:]}")  # fmt: skip
        # ru_maxrss is in KiB on Linux, in bytes on macOS
        out[steps] = (wall, cpu, maxrss * (1 if sys.platform == "darwin" else 1024))
    (w1, c1, rss), (w2, c2, _) = out[short], out[long]
    return {"steps": [short, long], "wall_s": w1, "cpu_s": c1, "peak_rss_bytes": rss,
            "s_per_step": (w2 - w1) / (long - short),
            "cpu_s_per_step": (c2 - c1) / (long - short)}  # fmt: skip


def measure_crossover(spec: BenchRow, s: BenchSettings) -> dict:
    """The larger config's training tokens/s at each of CROSSOVER_WIDTHS (n_embd)."""
    widths = CROSSOVER_WIDTHS[:1] if s.quick else CROSSOVER_WIDTHS
    out = {}
    for width in widths:
        model = dataclasses.replace(LARGE_MODEL, n_embd=width)
        timing, _ = time_training(
            spec, s.large_data, model, LARGE_BATCH, s.large_steps, 0, s.repeats,
            doc_mode=s.large_docs, learning_rate=LARGE_LEARNING_RATE,
        )  # fmt: skip
        out[str(width)] = {"tokens_per_s": timing.tokens / timing.time.wall,
                           "final_loss": timing.last_loss}  # fmt: skip
    return out


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
        row["quality"] = time_to_quality(spec, m, best)
    process = measure_processes([spec for spec, _ in live], s, say)
    for (_, row), proc in zip(live, process, strict=True):
        row["process"] = proc
    ref_step = next((r["train"]["s_per_step"] for r in rows if r["engine"] == "ref"
                     and "train" in r), None)  # fmt: skip
    batched = []
    for spec in loadable(BATCHED_ROWS[:1] if s.quick else BATCHED_ROWS, s.engines):
        say(f"  {spec.label}: batch {BATCH}, per sample, and its time to quality ...")
        row = in_fresh_process(measure_batched, spec, s)
        row["speedup"] = ref_step / row["s_per_sample"] if ref_step else None
        batched.append(row)
    crossover = []
    for spec in loadable(CROSSOVER_ROWS[:2] if s.quick else CROSSOVER_ROWS, s.engines):
        say(f"  {spec.label}: the larger config at n_embd {', '.join(map(str, CROSSOVER_WIDTHS))}")
        crossover.append({"engine": spec.engine, "dtype": spec.dtype,
                          "widths": in_fresh_process(measure_crossover, spec, s)})  # fmt: skip
    return {"engines": rows, "batched": batched, "crossover": crossover}


def loadable(candidates: list[BenchRow], asked: list[BenchRow]) -> list[BenchRow]:
    """The rows among `candidates` whose engine was asked for (--engines) and loads here."""
    names = {row.engine for row in asked}
    out = []
    for row in candidates:
        try:
            if row.engine in names:
                load_engine(row.engine)
                out.append(row)
        except EngineError:
            continue
    return out


def time_to_quality(spec: BenchRow, m: Measurement, best: Timing) -> dict | None:
    """The default run's time (its fastest round) when its model reaches the original's
    quality; the reference engine's from its per-step time (the original's own run, whose
    model is the quality bar, `microgpt eval` 2.3656)."""
    schedule = "1000 steps, batch 1, lr 0.01 decaying linearly to 0 (the original's run)"
    if spec.engine in SLOW_ENGINES:
        steps = get_preset("final").train.num_steps
        return {"loss": QUALITY_LOSS, "seconds": best.wall / m.default.steps * steps,
                "estimated": True, "schedule": schedule}  # fmt: skip
    if m.quality is None or m.quality > QUALITY_LOSS:
        return None
    return {"loss": m.quality, "seconds": best.wall, "estimated": False, "schedule": schedule}


def measure_processes(specs: list[BenchRow], s: BenchSettings, say) -> list[dict | None]:
    """measure_process for the rows of PROCESS_ENGINES (--quick: the first one's), in turns,
    round after round; each keeps its least disturbed (smallest) numbers."""
    todo = [i for i, spec in enumerate(specs) if spec.engine in PROCESS_ENGINES]
    if s.quick:
        todo = todo[:1]
    best: dict[int, dict] = {}
    for r in range(s.repeats):
        for i in todo:
            say(f"  {specs[i].label}: `microgpt train` as a process (round {r + 1}) ...")
            got = measure_process(specs[i], s)
            if i in best:
                got = {k: v if k == "steps" else min(v, best[i][k]) for k, v in got.items()}
            best[i] = got
    return [best.get(i) for i in range(len(specs))]


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
    return lines + format_sections(result)


def label_of(row: dict) -> str:
    return "/".join(row[k] for k in ("engine", "dtype", "device") if k in row)


def format_sections(result: dict) -> list[str]:
    """The tables after the main one: batched training per sample, `microgpt train` as a
    process, the time to the original's quality, and the larger config by width."""
    w, measured = result["workload"], [r for r in result["engines"] if "train" in r]
    ref_step = next((r["train"]["s_per_step"] for r in measured if r["engine"] == "ref"), None)
    head = f"{'engine':<20} {'steps':>5} {'us/sample':>20} {'speedup':>8} {'loss':>7}"
    lines = ["", f"batch {BATCH}, timed per sample (the final preset's run with --batch-size "
             f"{BATCH}); speed-up: the first row's time per step over this time per sample",
             head]  # fmt: skip
    for row in result["batched"]:
        us = f"{row['s_per_sample'] * 1e6:.2f} ({row['cpu_s_per_sample'] * 1e6:.2f})"
        speedup = f"{row['speedup']:>7.4g}x" if row["speedup"] else f"{'-':>8}"
        lines.append(f"{label_of(row):<20} {row['steps']:>5} {us:>20} {speedup} "
                     f"{row['final_loss']:>7.4f}")  # fmt: skip
    steps = PROCESS_STEPS if not result["quick"] else (20, 60)
    lines += ["", f"`microgpt train --engine E --dtype D` as a process: the default run's wall "
              f"and CPU time and peak memory; per step: the difference of a {steps[1]}- and a "
              f"{steps[0]}-step run", f"{'engine':<20} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9} "
              f"{'us/step':>20} {'speedup':>8}"]  # fmt: skip
    for row in measured:
        proc = row.get("process")
        if proc:
            us = f"{proc['s_per_step'] * 1e6:.1f} ({proc['cpu_s_per_step'] * 1e6:.1f})"
            speedup = f"{ref_step / proc['s_per_step']:>7.4g}x" if ref_step else f"{'-':>8}"
            lines.append(f"{label_of(row):<20} {proc['wall_s']:>7.3f} {proc['cpu_s']:>7.3f} "
                         f"{proc['peak_rss_bytes'] / 2**20:>9.1f} {us:>20} {speedup}")  # fmt: skip
    lines += ["", f"time to the original's quality (a model whose loss over all of {w['data']} "
              f"is at most {QUALITY_LOSS}), with the schedule each row used",
              f"{'engine':<26} {'seconds':>10} {'loss':>7}  schedule"]  # fmt: skip
    for label, q in [(label_of(r), r.get("quality")) for r in measured] + [
        (f"{label_of(r)} batch {BATCH}", r["quality"]) for r in result["batched"]
    ]:
        if q is None:
            lines.append(f"{label:<26} {'-':>10} {'-':>7}  not reached (or not measured)")
        else:
            secs = f"{q['seconds']:.3f}" + ("*" if q["estimated"] else "")
            lines.append(f"{label:<26} {secs:>10} {q['loss']:>7.4f}  {q['schedule']}")
    if any(r.get("quality", {}) and r["quality"]["estimated"] for r in measured):
        lines.append("* from its time per step: the original's run, whose model is the bar")
    if result["crossover"]:
        widths = list(result["crossover"][0]["widths"])
        lines += ["", "the larger config (n_layer 4, block 64, batch 12) by width: training "
                  "tokens/s", f"{'engine':<20} " + " ".join(f"{'n_embd ' + x:>12}"
                                                        for x in widths)]  # fmt: skip
        for row in result["crossover"]:
            cells = " ".join(f"{row['widths'][x]['tokens_per_s']:>12.0f}" for x in widths)
            lines.append(f"{label_of(row):<20} {cells}")
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
