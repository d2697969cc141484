"""Configuration: the model's shape, the optimizer and the run, as plain dataclasses.

Two presets reproduce the two published revisions of the original microgpt file
(see ../shared/reference/README.md): `final` (the "200 lines" version, the default)
and `first` (the "243 lines" version). Standard library only.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from .schema import Check, Int, Items, Number, SchemaError, Text

MLP_ACTIVATIONS = ("relu", "relu2")  # relu2 = ReLU squared, the first revision's MLP
LR_SCHEDULES = ("linear", "cosine")
DOC_MODES = ("lines", "paragraphs", "text")  # see data.split_documents
MATRICES = ("wte", "wpe", "lm_head", "attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1",
            "mlp_fc2")  # fmt: skip
FLOAT_MAX = sys.float_info.max

# Every size fits a C int32; a config that large is refused by the memory check long before.
MAX_SIZE = 2**31 - 1
MAX_STEPS = 10**18  # fits an int64 step counter
MAX_SEED = 2**64 - 1
# The smallest positive sampling temperature. Below it sampling is greedy in all but exact
# ties (a logit 0.75 below the top one gets probability e^-750 = 0), and 1/T (~1e-308 would
# overflow to inf) and logits/T stay finite for every logit below 1e305. 0 is greedy.
MIN_TEMPERATURE = 1e-3


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message says what to change."""


def temperature_check(label: str = "temperature") -> Check:
    return Number(MIN_TEMPERATURE, FLOAT_MAX, label, closed=True, also=(0,),
                  rule=f"0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}")  # fmt: skip


# The type and range of every config field: checked on the command line's values and on the
# configs a checkpoint stores (checkpoint.METADATA), one declaration for both.
MODEL_FIELDS: dict[str, Check] = {
    "n_layer": Int(1, MAX_SIZE, "n_layer"),
    "n_embd": Int(1, MAX_SIZE, "n_embd"),
    "n_head": Int(1, MAX_SIZE, "n_head"),
    "block_size": Int(1, MAX_SIZE, "block_size"),
    "mlp": Text("mlp", choices=MLP_ACTIVATIONS),
    "init_std": Number(0, FLOAT_MAX, "init_std", closed=True),
    "zero_init": Items(Text("zero_init", choices=MATRICES), 0, len(MATRICES), "zero_init"),
}
OPTIM_FIELDS: dict[str, Check] = {
    "learning_rate": Number(0, FLOAT_MAX, "learning rate", above=True, closed=True),
    "beta1": Number(0, 1, "beta1", rule="in [0, 1)"),
    "beta2": Number(0, 1, "beta2", rule="in [0, 1)"),
    "eps_adam": Number(0, FLOAT_MAX, "eps_adam", above=True, closed=True),
    "schedule": Text("schedule", choices=LR_SCHEDULES),
}
TRAIN_FIELDS: dict[str, Check] = {
    "num_steps": Int(0, MAX_STEPS, "steps"),
    "batch_size": Int(1, MAX_SIZE, "batch size"),
    "seed": Int(-MAX_SEED, MAX_SEED, "seed", rule="an integer of at most 64 bits"),
    "temperature": temperature_check(),
    "num_samples": Int(0, MAX_SIZE, "num samples"),
    "doc_mode": Text("doc mode", choices=DOC_MODES),
    "val_fraction": Number(0, 1, "val fraction", rule="a number in [0, 1)"),
}


def check_fields(config, checks: dict[str, Check]) -> None:
    """Each field of a config against its declared type and range (ConfigError if not)."""
    for name, check in checks.items():
        try:
            check(getattr(config, name))
        except SchemaError as e:
            raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class ModelConfig:
    """The transformer's shape and how its weights are drawn."""

    n_layer: int = 1  # depth of the transformer (number of layers)
    n_embd: int = 16  # width of the network (embedding dimension)
    n_head: int = 4  # number of attention heads
    block_size: int = 16  # maximum context length of the attention window
    mlp: str = "relu"  # "relu" (final revision) or "relu2" (first revision)
    init_std: float = 0.08  # every matrix is drawn from gauss(0, init_std) ...
    zero_init: tuple[str, ...] = ()  # ... except these, drawn with std 0 (the draws still happen)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        check_fields(self, MODEL_FIELDS)
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                "pick sizes like --n-embd 16 --n-head 4"
            )


@dataclass(frozen=True)
class OptimConfig:
    """Adam and its learning-rate schedule."""

    learning_rate: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps_adam: float = 1e-8
    schedule: str = "linear"  # "linear" decay to 0 (final) or "cosine" (first)

    def validate(self) -> None:
        check_fields(self, OPTIM_FIELDS)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: how long, on how much data per step, and what to print after."""

    num_steps: int = 1000
    batch_size: int = 1  # documents per step; 1 is the original's semantics
    seed: int = 42
    temperature: float = 0.5  # for the samples printed after training
    num_samples: int = 20
    doc_mode: str = "lines"  # how the data file splits into documents (data.DOC_MODES)
    val_fraction: float = 0.0  # share of the documents held out for validation

    def validate(self) -> None:
        check_fields(self, TRAIN_FIELDS)


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelConfig
    optim: OptimConfig
    train: TrainConfig
    inference_header: str = field(default="--- inference ---")


PRESETS: dict[str, Preset] = {
    # The "200 lines" revision: the one most people have read.
    "final": Preset(
        name="final",
        model=ModelConfig(),
        optim=OptimConfig(),
        train=TrainConfig(),
        inference_header="--- inference (new, hallucinated names) ---",
    ),
    # The "243 lines" revision: smaller context, tiny init with zeroed output projections,
    # ReLU squared, Adam (0.9, 0.95) with cosine decay, 500 steps.
    "first": Preset(
        name="first",
        model=ModelConfig(
            block_size=8, mlp="relu2", init_std=0.02, zero_init=("attn_wo", "mlp_fc2")
        ),
        optim=OptimConfig(beta1=0.9, beta2=0.95, schedule="cosine"),
        train=TrainConfig(num_steps=500),
        inference_header="--- inference ---",
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def to_dict(obj) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}


def from_dict(cls, data: dict):
    """Rebuild a config dataclass from `to_dict` output, refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    return cls(**kwargs)
