"""The training loop, once for every engine. Standard library only.

A `Trainer` owns what the original program keeps at top level: the run's random generator,
the shuffled documents, the tokenizer and the step counter. It hands the engine one batch
per step, applies the learning-rate schedule and asks for the Adam update. The CLI, the
studio and the tests all drive the same `Trainer.step`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import checkpoint as ckpt_io
from .config import ModelConfig, OptimConfig, TrainConfig
from .engine import Engine
from .init import init_params
from .schedule import learning_rate
from .tokenizer import Tokenizer


@dataclass
class StepResult:
    step: int  # 1-based: the number of steps completed after this one
    loss: float
    lr: float


class Trainer:
    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        docs: list[str],
        optim: OptimConfig,
        train: TrainConfig,
        rng: random.Random,
        step: int = 0,
        preset: str = "final",
        extra: dict[str, str] | None = None,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.docs = docs
        self.optim = optim
        self.train = train
        self.rng = rng
        self.step_count = step  # completed steps
        self.preset = preset
        self.extra = dict(extra or {})

    @property
    def model(self) -> ModelConfig:
        return self.engine.config

    @property
    def done(self) -> bool:
        return self.step_count >= self.train.num_steps

    def batch(self, step: int) -> list[list[int]]:
        """The token sequences of 0-based `step`: documents step*B .. step*B+B-1 (cyclic).

        Each is [BOS] + doc + [BOS], cut to block_size + 1 tokens as the original's
        `n = min(block_size, len(tokens) - 1)` does.
        """
        B, block_size = self.train.batch_size, self.model.block_size
        out = []
        for b in range(B):
            doc = self.docs[(step * B + b) % len(self.docs)]
            tokens = self.tokenizer.doc_tokens(doc)
            n = min(block_size, len(tokens) - 1)
            out.append(tokens[: n + 1])
        return out

    def step(self) -> StepResult:
        """Train one step: forward, backward, Adam with the scheduled learning rate."""
        step = self.step_count
        loss = self.engine.forward_backward(self.batch(step))
        lr_t = learning_rate(self.optim, step, self.train.num_steps)
        self.engine.adam_step(lr_t, step + 1)
        self.step_count = step + 1
        return StepResult(step=step + 1, loss=loss, lr=lr_t)

    def checkpoint(self) -> ckpt_io.Checkpoint:
        """Everything needed to sample from, or continue, this run."""
        m, v = self.engine.optimizer_state()
        return ckpt_io.Checkpoint(
            model=self.model,
            optim=self.optim,
            train=self.train,
            uchars=self.tokenizer.uchars,
            params=self.engine.parameters(),
            adam_m=m,
            adam_v=v,
            step=self.step_count,
            preset=self.preset,
            rng_state=self.rng.getstate(),
            extra={**self.extra, "engine": self.engine.name},
        )


def new_trainer(
    engine_cls: type[Engine],
    docs: list[str],
    model: ModelConfig,
    optim: OptimConfig,
    train: TrainConfig,
    rng: random.Random,
    dtype: str = "float64",
    preset: str = "final",
    extra: dict[str, str] | None = None,
    engine_kwargs: dict | None = None,
) -> Trainer:
    """A fresh run over already-shuffled `docs`: tokenizer, then weights drawn from `rng`.

    `engine_kwargs` go to the engine's constructor (e.g. the torch engine's `device`)."""
    tokenizer = Tokenizer.from_docs(docs)
    params = init_params(model, tokenizer.vocab_size, rng)
    engine = engine_cls(
        model, optim, tokenizer.vocab_size, params, dtype=dtype, **(engine_kwargs or {})
    )
    return Trainer(engine, tokenizer, docs, optim, train, rng, preset=preset, extra=extra)
