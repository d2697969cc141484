"""`microgpt sweep`'s command: flags -> a checked plan -> trials on the workers -> the
table and the pictures. Nothing is written until everything is checked.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt_io
from .. import runs
from ..data import default_names_path, load_docs, split_validation
from ..engine import EngineError
from ..flags import (
    UsageError,
    add_after_training_flags,
    add_config_flags,
    add_device_flags,
    add_loop_flags,
    add_setup_flags,
    run_spec,
    say,
)
from ..init import num_params
from . import pictures, store
from .pool import Pool, default_workers
from .search import check_space
from .space import (
    Axis,
    Range,
    SweepError,
    flag,
    parse_sample,
    parse_set,
    show_value,
    spec_from_dict,
    spec_to_dict,
    trial_name,
    trial_spec,
    validate,
)
from .space import configs as grid_configs
from .summary import rank, table, to_csv, train_command

DEFAULT_SEEDS = 3  # a standard deviation needs two; one seed alone misleads
DEFAULT_VAL_FRACTION = 0.1  # trials are ranked on held-out documents
DEFAULT_DRAWS = 10  # --trials with --sample
DEFAULT_STUDY_TRIALS = 20  # --trials with --backend optuna
MAX_TRIALS = 1000  # --max-trials: a typo in a grid should not start ten thousand runs


def add_sweep_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="train many runs: a grid or random search over train flags, with seeds",
        description="Train every config of a grid (--set) or random search (--sample) with "
        "several seeds, in parallel; every trial is a run directory under DIR/trials. "
        "Rerunning the same command continues an interrupted sweep; changing --set values, "
        "--seeds or --trials adds trials. Other flags are train's, fixed for every trial.",
    )
    p.add_argument("--out", metavar="DIR", required=True,
                   help="the sweep directory: sweep.json, results.jsonl, summary.csv, "
                   "report.html, pictures/, trials/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="sweep a train flag (its name: learning_rate, n_embd, batch_size, "
                   "dtype, engine, ...) over these values; several --set make a grid")
    p.add_argument("--sample", action="append", default=[], metavar="KEY=DIST:LO:HI",
                   help="draw a train flag at random: DIST is uniform, log (log-uniform) or "
                   "int, e.g. learning_rate=log:1e-3:1e-1; --trials draws")
    p.add_argument("--trials", type=int, metavar="N",
                   help=f"random draws of the --sample ranges (default {DEFAULT_DRAWS}); with "
                   f"--backend optuna, the study's trials (default {DEFAULT_STUDY_TRIALS})")
    p.add_argument("--search-seed", type=int, default=0, metavar="N",
                   help="seed of the random search's draws (default 0)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N",
                   help=f"train every config with N seeds: --seed, --seed + 1, ... (default "
                   f"{DEFAULT_SEEDS})")
    p.add_argument("--workers", type=int, metavar="W",
                   help="worker processes, one BLAS thread each (default: one per core)")
    p.add_argument("--max-trials", type=int, default=MAX_TRIALS, metavar="N",
                   help=f"refuse a sweep of more trials (default {MAX_TRIALS})")
    p.add_argument("--backend", choices=["grid", "optuna"], default="grid",
                   help="grid: every config (default); optuna: TPE chooses configs from the "
                   "--set choices and --sample ranges (pip install 'microgpt-lab[sweep]')")
    p.add_argument("--storage", metavar="FILE|URL",
                   help="optuna: the study's storage, a journal file or a database URL that "
                   "several machines share (default: DIR/optuna.journal)")
    p.add_argument("--study", metavar="NAME", help="optuna: the study's name (default: sweep)")
    p.add_argument("--prune", action="store_true",
                   help="optuna: stop weak trials early on their validation loss (median rule)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages on stderr")
    add_setup_flags(p)
    add_loop_flags(p)
    add_config_flags(p)
    add_after_training_flags(p)
    add_device_flags(p, compile_flag=True)
    actions = {a.dest: a for a in p._actions}
    # train's flags, as they read in a sweep
    actions["engine"].help = "computation engine (default: the fastest installed)"
    actions["dtype"].help = ("float precision of the engine (default: float64, which matches the "
                             "reference; float32 is faster, numpy engine only)")
    actions["val_fraction"].help = ("hold out this share of the documents (chosen with each "
                                    "trial's seed); trials are ranked on their loss (default "
                                    f"{DEFAULT_VAL_FRACTION})")
    actions["checkpoint_every"].help = ("write each trial's model.safetensors every N steps, so "
                                        "a trial killed by SIGKILL resumes from there (default: "
                                        "at the end and on Ctrl-C/SIGTERM; a killed trial "
                                        "restarts, to the same result)")
    actions["seed"].help = "the first trial seed; the others follow it (default 42)"
    p.set_defaults(func=lambda args: cmd_sweep(args, actions))


@dataclass
class Plan:
    """A sweep, validated: what every trial shares, what varies, and the trials."""

    base: runs.RunSpec
    grid: list[Axis]
    ranges: list[Range]
    configs: list[dict]
    seeds: list[int]
    definition: dict  # what DIR/sweep.json records

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.grid] + [r.key for r in self.ranges]

    def tasks(self, path: Path) -> list[dict]:
        """One task per trial, seed by seed (a worker keeps a seed's documents)."""
        out = []
        for seed in self.seeds:
            for config in self.configs:
                name = trial_name(config, seed)
                out.append({"kind": "trial", "trial": name, "dir": str(path / store.TRIALS / name),
                            "config": config, "seed": seed,
                            "spec": spec_to_dict(trial_spec(self.base, config, seed))})  # fmt: skip
        return out


def given(args, key: str) -> bool:
    return getattr(args, key, None) is not None


def make_plan(args, actions: dict) -> Plan:
    """Parse and check everything a sweep needs, writing nothing; a mistake is a one-line
    error before any trial starts."""
    for name, value, least in (("--seeds", args.seeds, 1), ("--max-trials", args.max_trials, 1),
                               ("--workers", args.workers, 1), ("--trials", args.trials, 1)):
        if value is not None and value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}")
    if not args.out:
        raise UsageError("--out needs a directory, got ''")
    grid = [parse_set(s, actions) for s in args.set]
    ranges = [parse_sample(s, actions) for s in args.sample]
    keys = [a.key for a in grid] + [r.key for r in ranges]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise SweepError(f"{key} is swept twice (--set/--sample); give each key once")
        if given(args, key):
            raise SweepError(f"{flag(key)} and a sweep of {key} are both given; drop one")
    if ranges and args.backend == "grid" and args.trials is None:
        args.trials = DEFAULT_DRAWS
    if args.backend == "grid" and args.trials is not None and not ranges:
        raise SweepError("--trials counts random draws; give --sample KEY=DIST:LO:HI too")
    if args.prune and args.backend != "optuna":
        raise SweepError("--prune needs --backend optuna")
    if (args.storage or args.study) and args.backend != "optuna":
        raise SweepError("--storage and --study need --backend optuna")

    base = run_spec(args)
    if "val_fraction" not in keys and args.val_fraction is None:
        base = dataclasses.replace(base, val_fraction=DEFAULT_VAL_FRACTION)
    if "data" in keys:
        grid = [Axis(a.key, [str(Path(v).resolve()) for v in a.values]) if a.key == "data"
                else a for a in grid]  # fmt: skip
    else:
        data = Path(args.data) if args.data is not None else default_names_path()
        base = dataclasses.replace(base, data=str(data.resolve()))
    seed0 = base.configs()[3].seed
    seeds = [seed0 + i for i in range(args.seeds)]

    if args.backend == "optuna":
        configs = check_space(grid, ranges)
        count, what = (args.trials or DEFAULT_STUDY_TRIALS) * len(seeds), "study trials"
    else:
        configs = grid_configs(grid, ranges, args.trials or 0, args.search_seed)
        if not keys and len(seeds) == 1:
            raise SweepError("nothing to sweep: give --set KEY=V1,V2,..., --sample "
                             "KEY=DIST:LO:HI or --seeds N with N > 1")  # fmt: skip
        count, what = len(configs) * len(seeds), "configs"
    if count > args.max_trials:
        n = count // len(seeds)
        raise SweepError(f"{count} trials ({n} {what} x {len(seeds)} seeds) is more than "
                         f"--max-trials {args.max_trials}; sweep fewer values or raise "
                         "--max-trials")  # fmt: skip
    for config in configs:
        validate(base, config)
        if trial_spec(base, config, seeds[0]).val_fraction == 0:
            raise SweepError("a sweep ranks trials by validation loss: --val-fraction must be "
                             "more than 0")  # fmt: skip
    shas = check_resources([trial_spec(base, c, seeds[0]) for c in configs], count, args.out)
    study = {"study": args.study or "sweep"} if args.backend == "optuna" else {}
    definition = store.definition(args.backend, keys, fixed_flags(base, keys), shas, **study)
    return Plan(base, grid, ranges, configs, seeds, definition)


def fixed_flags(base: runs.RunSpec, keys: list[str]) -> dict:
    """The train flags every trial shares, as given (None: the default). Not the seed (a
    rerun may add seeds) nor --checkpoint-every (it changes no result)."""
    flags = spec_to_dict(dataclasses.replace(base, seed=None, checkpoint_every=0))
    engine = flags.pop("engine")
    flags.update(engine=engine.pop("name"), **engine)  # dtype, device, compile
    return {k: v for k, v in flags.items() if k not in keys}


def check_resources(specs: list[runs.RunSpec], trials: int, out: str) -> dict[str, str]:
    """Each engine loads and takes its dtype; each data file splits as asked (the errors
    `microgpt train` would give, before any trial starts); the disk has room for `trials`
    trials of the largest config. The data files' sha256."""
    shas: dict[str, str] = {}
    engines, splits = set(), {}
    largest = 0
    for spec in specs:
        if spec.engine not in engines:
            engines.add(spec.engine)
            engine_cls, name, dtype, _ = spec.engine.build()
            if dtype not in engine_cls.dtypes:
                raise EngineError(f"the {name} engine supports --dtype "
                                  f"{' or '.join(engine_cls.dtypes)}, not {dtype}")  # fmt: skip
        _, model, _, train = spec.configs()
        split = (spec.data, train.doc_mode, train.val_fraction)
        if split not in splits:
            docs, shas[spec.data] = load_docs(spec.data, random.Random(0), train.doc_mode)
            splits[split] = (docs, split_validation(docs, train.val_fraction)[0])
        docs, train_docs = splits[split]
        vocab = len(set("".join(docs))) + 1
        # two checkpoints (latest, best): weights and Adam's two moments as float64, the
        # documents' fingerprint (3 bytes a document, base64); a metrics line a step
        checkpoint = 3 * 8 * num_params(model, vocab) + 4 * len(train_docs) + 8192
        largest = max(largest, 2 * checkpoint + 80 * train.num_steps)
    where = Path(out).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if trials * largest > free:
        raise SweepError(f"{trials} trials need about {trials * largest / 1e6:.0f} MB in "
                         f"{out} and {free / 1e6:.0f} MB are free; free some space or sweep "
                         "fewer trials")  # fmt: skip
    return shas


def cmd_sweep(args, actions: dict) -> int:
    plan = make_plan(args, actions)
    path = store.check(args.out, plan.definition)
    sweep = store.SweepDir(path, plan.definition)
    try:
        if args.backend == "optuna":
            return run_optuna(plan, args, sweep)
        return run_grid(plan, args, sweep)
    finally:
        sweep.close()


def run_grid(plan: Plan, args, sweep: store.SweepDir) -> int:
    tasks = plan.tasks(sweep.path)
    results = sweep.results()
    pending = [t for t in tasks if t["trial"] not in results]
    show = (lambda *a: None) if args.quiet else say
    show(f"sweep: {len(tasks)} trials ({len(plan.configs)} configs x {len(plan.seeds)} seeds)"
         + (f", {len(tasks) - len(pending)} already done" if len(pending) < len(tasks) else ""))
    t0 = time.perf_counter()
    done = len(tasks) - len(pending)
    signum = run_trials(pending, args, sweep, len(tasks), done) if pending else None
    if signum is not None:
        done = sum(t["trial"] in sweep.results() for t in tasks)
        say(f"microgpt: sweep interrupted: {done} of {len(tasks)} trials done; rerun the same "
            "command to continue")  # fmt: skip
        return 128 + signum
    if pending:
        show(f"sweep: {len(pending)} trials in {time.perf_counter() - t0:.1f} s on "
             f"{min(len(pending), args.workers or default_workers())} workers")
    results = sweep.results()
    finish(plan, [results[t["trial"]] for t in tasks], {t["trial"]: t for t in tasks}, sweep,
           show)  # fmt: skip
    return 0


def progress_bar(args, total: int, done: int):
    """trials done, on stderr, for a person watching (a terminal, no --quiet)."""
    if args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, file=sys.stderr, unit="trial", dynamic_ncols=True,
                leave=False)  # fmt: skip


def run_trials(tasks: list[dict], args, sweep: store.SweepDir, total: int,
               done: int) -> int | None:  # fmt: skip
    """Train `tasks` on the workers, appending each result as it comes (`done` of `total`
    trials are done already: the progress bar). The signal number when Ctrl-C / SIGTERM
    stopped it (every worker wrote a checkpoint first), else None."""
    workers = min(len(tasks), args.workers or default_workers())
    bar = progress_bar(args, total, done)
    stop = runs.StopSignals()
    pool = None
    clean = False
    try:
        with stop:
            pool = Pool(workers)

            def poll() -> None:
                if stop.requested() and not pool.stopping:
                    pool.stop()

            for message in pool.run(tasks, poll):
                if "user_error" in message:
                    pool.stop()
                    raise SweepError(f"trial {message['trial']}: {message['user_error']}")
                if "result" in message:
                    sweep.append(message["result"])
                    if bar is not None:
                        bar.update(1)
            clean = True
    finally:
        if pool is not None:
            pool.close(kill=not clean)
        if bar is not None:
            bar.close()
    return stop.signum


def finish(plan: Plan, results: list[dict], tasks: dict[str, dict], sweep: store.SweepDir,
           show) -> None:  # fmt: skip
    """The ranked table (printed and DIR/summary.csv), the best command, the pictures."""
    keys = plan.keys
    rows = rank(results)
    commands = []
    for row in rows:
        first = row.trials[0]
        spec = spec_from_dict(tasks[first["trial"]]["spec"])
        commands.append(train_command(spec, first["engine"], first["dtype"]))
    best = commands[0]
    print(table(rows, keys))
    print(f"\nbest: {best}")
    ckpt_io.write_atomic(sweep.path / store.SUMMARY, to_csv(rows, keys, commands).encode())
    figures = {"loss_curves": pictures.loss_curves(rows)}
    for key in keys:
        connect = key in (a.key for a in plan.grid)
        figures[f"val_loss_{key}"] = pictures.val_loss_against(rows, key, keys, connect)
    folder = sweep.path / store.PICTURES
    folder.mkdir(exist_ok=True)
    for name, svg in figures.items():
        ckpt_io.write_atomic(folder / f"{name}.svg", svg.encode("utf-8"))
    fixed = train_command(dataclasses.replace(plan.base, seed=None))
    swept = " ".join(f"{k} ({len({show_value(r.config.get(k)) for r in rows})} values)"
                     for k in keys) or "seeds only"  # fmt: skip
    page = pictures.report(f"microgpt sweep: {len(results)} trials, {len(rows)} configs x "
                           f"{len(plan.seeds)} seeds; swept: {swept}", fixed, rows, keys, best,
                           figures)  # fmt: skip
    ckpt_io.write_atomic(sweep.path / store.REPORT, page.encode("utf-8"))
    show(f"saved {sweep.path / store.SUMMARY}, {sweep.path / store.REPORT} and "
         f"{folder}/*.svg")  # fmt: skip


def run_optuna(plan: Plan, args, sweep: store.SweepDir) -> int:
    """W workers on one Optuna study (search.py); then this DIR's table and pictures, and
    the study's best trial (from every machine that shares it)."""
    from . import search

    storage = args.storage or str(sweep.path / "optuna.journal")
    study = args.study or "sweep"
    base = plan.base
    if args.prune and not base.eval_every:  # pruning needs evaluations to judge
        base = dataclasses.replace(base, eval_every=max(1, base.configs()[3].num_steps // 10))
    total = args.trials or DEFAULT_STUDY_TRIALS
    done = search.prepare(storage, study, str(sweep.path))
    task = {
        "kind": "optuna", "storage": storage, "study": study, "trials": total,
        "dir": str(sweep.path), "prune": args.prune, "seeds": plan.seeds,
        "warmup": base.eval_every, "base": spec_to_dict(base),
        "choices": {a.key: a.values for a in plan.grid},
        "ranges": {r.key: (r.dist, r.lo, r.hi, r.integer) for r in plan.ranges},
    }  # fmt: skip
    if done < total:
        workers = min(args.workers or default_workers(), total - done)
        n = len(plan.seeds)
        signum = run_trials([task] * workers, args, sweep, total * n, done * n)
        if signum is not None:
            say("microgpt: sweep interrupted; rerun the same command to continue the study")
            return 128 + signum
    results = list(sweep.results().values())
    if results:
        tasks = {r["trial"]: {"spec": spec_to_dict(trial_spec(base, r["config"], r["seed"]))}
                 for r in results}  # fmt: skip
        finish(plan, results, tasks, sweep, (lambda *a: None) if args.quiet else say)
    print(search.best(storage, study))
    return 0
