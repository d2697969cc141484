"""Configuration: the model's shape, the optimizer and the run, as plain dataclasses.

Two presets reproduce the two published revisions of the original microgpt file
(see ../shared/reference/README.md): `final` (the "200 lines" version, the default)
and `first` (the "243 lines" version). Standard library only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

MLP_ACTIVATIONS = ("relu", "relu2")  # relu2 = ReLU squared, the first revision's MLP
LR_SCHEDULES = ("linear", "cosine")
DOC_MODES = ("lines", "paragraphs", "text")  # see data.split_documents


def _is_int(value) -> bool:
    """An int that is not a bool (JSON `true` must not pass for a size of 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message says what to change."""


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
        for name in ("n_layer", "n_embd", "n_head", "block_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                "pick sizes like --n-embd 16 --n-head 4"
            )
        if self.mlp not in MLP_ACTIVATIONS:
            raise ConfigError(f"mlp must be one of {', '.join(MLP_ACTIVATIONS)}, got {self.mlp!r}")
        if not (math.isfinite(self.init_std) and self.init_std >= 0):
            raise ConfigError(f"init_std must be a finite number >= 0, got {self.init_std!r}")


@dataclass(frozen=True)
class OptimConfig:
    """Adam and its learning-rate schedule."""

    learning_rate: float = 0.01
    beta1: float = 0.85
    beta2: float = 0.99
    eps_adam: float = 1e-8
    schedule: str = "linear"  # "linear" decay to 0 (final) or "cosine" (first)

    def validate(self) -> None:
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            lr = self.learning_rate
            raise ConfigError(f"learning rate must be a finite number > 0, got {lr!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not (0 <= value < 1):
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if not (math.isfinite(self.eps_adam) and self.eps_adam > 0):
            raise ConfigError(f"eps_adam must be a finite number > 0, got {self.eps_adam!r}")
        if self.schedule not in LR_SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(LR_SCHEDULES)}")


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
        if not _is_int(self.num_steps) or self.num_steps < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {self.num_steps!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.doc_mode not in DOC_MODES:
            modes = ", ".join(DOC_MODES)
            raise ConfigError(f"doc mode must be one of {modes}, got {self.doc_mode!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ConfigError(f"val fraction must be a number in [0, 1), got {self.val_fraction!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_int(self.num_samples) or self.num_samples < 0:
            raise ConfigError(f"num samples must be an integer >= 0, got {self.num_samples!r}")


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
