"""What a sweep tries: `--set` grids and `--sample` ranges over train flags, crossed with seeds.

A KEY is a `microgpt train` flag's name (its dest: learning_rate, n_embd, batch_size, dtype,
engine, ...). Every value is parsed by that flag's own type and choices, and every trial's
spec is validated by `RunSpec.configs()`, before anything starts: a value `microgpt train`
would refuse is refused here with the same words.

    >>> grid = [Axis("learning_rate", [0.01, 0.03]), Axis("n_head", [1, 4])]
    >>> [c for c in configs(grid, [], 0, 0)]  # doctest: +NORMALIZE_WHITESPACE
    [{'learning_rate': 0.01, 'n_head': 1}, {'learning_rate': 0.01, 'n_head': 4},
     {'learning_rate': 0.03, 'n_head': 1}, {'learning_rate': 0.03, 'n_head': 4}]
    >>> trial_name({"learning_rate": 0.01, "n_head": 4}, 42)
    'learning_rate=0.01,n_head=4,seed=42'
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import random
import re
from dataclasses import dataclass

from ..config import ConfigError
from ..flags import UsageError
from ..runs import EngineSpec, RunSpec

# The keys a sweep may vary: every RunSpec field (they are train flags' dests), and the two
# engine flags that live in its EngineSpec. `seed` is varied by --seeds.
ENGINE_KEYS = ("engine", "dtype")
SPEC_KEYS = tuple(f.name for f in dataclasses.fields(RunSpec) if f.name != "engine")
KEYS = tuple(k for k in SPEC_KEYS if k != "seed") + ENGINE_KEYS
DISTRIBUTIONS = ("uniform", "log", "int")  # --sample KEY=DIST:LO:HI


class SweepError(UsageError):
    """A sweep that cannot run as asked; the message says what to do."""


@dataclass(frozen=True)
class Axis:
    """One `--set KEY=V1,V2,...`: a key and its values, in the order given."""

    key: str
    values: list


@dataclass(frozen=True)
class Range:
    """One `--sample KEY=DIST:LO:HI`: values drawn at random (log: log-uniform)."""

    key: str
    dist: str
    lo: float
    hi: float
    integer: bool  # the flag takes integers: draws are rounded to one


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_key(key: str, actions: dict, option: str) -> None:
    if key == "seed":
        raise SweepError(f"{option} seed: seeds are swept with --seeds N (trials use --seed, "
                         "--seed + 1, ...)")  # fmt: skip
    if key not in KEYS or key not in actions:
        raise SweepError(
            f"{option} {key}: not a train flag a sweep can vary; choose from {', '.join(KEYS)}"
        )


def parse_value(key: str, text: str, actions: dict):
    """`text` as the train flag `key` would parse it (its type and choices)."""
    action = actions[key]
    kind = action.type or str
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise SweepError(f"--set {key}: invalid {kind.__name__} value {text!r} "
                         f"(as {flag(key)} takes)") from None  # fmt: skip
    if action.choices is not None and value not in action.choices:
        shown = ", ".join(map(str, action.choices))
        raise SweepError(f"--set {key}: invalid choice {text!r} (choose from {shown})")
    return value


def parse_set(text: str, actions: dict) -> Axis:
    """`KEY=V1,V2,...` -> Axis, each value parsed by the train flag; an empty list is refused."""
    key, sep, values = text.partition("=")
    key = key.strip()
    if not sep:
        raise SweepError(f"--set {text!r}: write KEY=V1,V2,... (e.g. learning_rate=0.003,0.01)")
    check_key(key, actions, "--set")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not items:
        raise SweepError(f"--set {key}= gives no values: the grid would be empty; list them as "
                         f"{key}=V1,V2,...")  # fmt: skip
    parsed = [parse_value(key, v, actions) for v in items]
    for i, v in enumerate(parsed):
        if v in parsed[:i]:
            raise SweepError(f"--set {key} lists {items[i]!r} twice")
    return Axis(key, parsed)


def parse_sample(text: str, actions: dict) -> Range:
    """`KEY=DIST:LO:HI` (uniform, log or int) -> Range."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    parts = rest.split(":")
    if not sep or len(parts) != 3 or parts[0] not in DISTRIBUTIONS:
        dists = ", ".join(DISTRIBUTIONS)
        raise SweepError(f"--sample {text!r}: write KEY=DIST:LO:HI with DIST one of {dists} "
                         "(e.g. learning_rate=log:1e-3:1e-1)")  # fmt: skip
    check_key(key, actions, "--sample")
    kind = actions[key].type
    if kind not in (int, float) or actions[key].choices is not None:
        raise SweepError(f"--sample {key}: not a number to draw; list its values with --set "
                         f"{key}=V1,V2,...")  # fmt: skip
    dist = parts[0]
    try:
        lo, hi = (int(p) if dist == "int" else float(p) for p in parts[1:])
    except ValueError:
        number = "integers" if dist == "int" else "numbers"
        raise SweepError(f"--sample {text!r}: LO and HI must be {number}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise SweepError(f"--sample {text!r}: needs LO < HI")
    if dist == "log" and lo <= 0:
        raise SweepError(f"--sample {text!r}: a log-uniform range needs LO > 0")
    if dist == "int" and kind is not int:
        raise SweepError(f"--sample {key}: takes real numbers; use uniform or log")
    return Range(key, dist, lo, hi, integer=kind is int)


def draw(r: Range, rng: random.Random):
    """One value from the range; real numbers keep 4 significant digits (readable names and
    command lines), integers are rounded."""
    if r.dist == "int":
        return rng.randint(int(r.lo), int(r.hi))
    if r.dist == "log":
        x = math.exp(rng.uniform(math.log(r.lo), math.log(r.hi)))
    else:
        x = rng.uniform(r.lo, r.hi)
    if r.integer:
        return min(max(round(x), math.ceil(r.lo)), math.floor(r.hi))
    return float(f"{x:.4g}")


def configs(grid: list[Axis], ranges: list[Range], trials: int, search_seed: int) -> list[dict]:
    """The grid's product crossed with `trials` random draws (one generator seeded with
    `search_seed`, keys drawn in sorted order); duplicates dropped, first kept."""
    rng = random.Random(search_seed)
    draws = [{r.key: draw(r, rng) for r in sorted(ranges, key=lambda r: r.key)}
             for _ in range(trials)] if ranges else [{}]  # fmt: skip
    out: list[dict] = []
    for point in itertools.product(*(a.values for a in grid)):
        fixed = dict(zip((a.key for a in grid), point))
        for d in draws:
            config = {**fixed, **d}
            if config not in out:
                out.append(config)
    return out


# --- trials ---------------------------------------------------------------------------------

SAFE_NAME = re.compile(r"[A-Za-z0-9._+-]+")


def show_value(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def trial_name(config: dict, seed: int) -> str:
    """The trial's folder name: its swept values and seed, `key=value` joined by commas,
    keys sorted. A value that is not file-name safe (a path) appears as a short hash."""
    parts = []
    for key in sorted(config):
        text = show_value(config[key])
        if not SAFE_NAME.fullmatch(text) or len(text) > 40:
            text = "h" + hashlib.sha256(text.encode()).hexdigest()[:10]
        parts.append(f"{key}={text}")
    return ",".join(parts + [f"seed={seed}"])


def trial_spec(base: RunSpec, config: dict, seed: int) -> RunSpec:
    """The base spec with the config's values (engine and dtype in its EngineSpec) and seed."""
    engine = {k: v for k, v in config.items() if k in ENGINE_KEYS}
    fields = {k: v for k, v in config.items() if k not in ENGINE_KEYS}
    if engine:
        fields["engine"] = dataclasses.replace(
            base.engine, **{("name" if k == "engine" else k): v for k, v in engine.items()}
        )
    return dataclasses.replace(base, seed=seed, **fields)


def validate(base: RunSpec, config: dict) -> None:
    """Refuse a config `microgpt train` would refuse (RunSpec.configs' ConfigError)."""
    try:
        trial_spec(base, config, base.seed or 0).configs()
    except ConfigError as e:
        label = " ".join(f"{k}={show_value(v)}" for k, v in config.items()) or "the trials"
        raise ConfigError(f"{label}: {e}") from None


def spec_to_dict(spec: RunSpec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> RunSpec:
    return RunSpec(**{**d, "engine": EngineSpec(**d["engine"])})
