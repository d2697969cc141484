"""The C engine: the original microgpt in plain C99 (csrc/microgpt.c, written as llm.c writes
GPT-2), behind the engine interface. Standard library only: no NumPy.

    csrc/microgpt.h   the core's API: one struct of sizes, one flat buffer each for weights,
                      gradients and Adam's moments, activations allocated once per batch size
    csrc/microgpt.c   the layers as paired *_forward / *_backward functions, Adam, and
                      sampling with Python's own random stream (MT19937, random.choices)
    csrc/module.c     the CPython binding: a Model and a KV Cache (compiled as _core64 and,
                      through csrc/float32.c, as _core32)

In float64 the forward pass performs the reference engine's operations in its order, so the
losses, logits and samples are the reference's bit for bit, and the gradients agree to
rounding; float32 is the fast one. Everything reaches C through this class, which validates
every size and token id first: a bad one is an EngineError here, never a crash there.
"""

from __future__ import annotations

import math
import random
from array import array
from typing import Any

from ..config import ModelConfig, OptimConfig
from ..engine import Engine, EngineError, check_params
from ..init import num_params
from ..tensor import Tensor

try:  # float32's _core32 is imported when first asked for
    from ._core64 import Model as Model64
    from ._core64 import acts_bytes
except ModuleNotFoundError:
    raise  # not built: engine.load_engine says how to get it
except ImportError as e:  # built, but it does not load here (another Python, a broken build)
    raise EngineError(
        f"the c engine's compiled part does not load ({e}); rebuild it with a C compiler: "
        "pip install --no-deps --force-reinstall microgpt-lab, or pip install -e . in a checkout"
    ) from None

PARAMS, GRADS, ADAM_M, ADAM_V = 0, 1, 2, 3  # the core's flat buffers (mg_load / mg_store)
# Limits the C core's int sizes stay far below (csrc/microgpt.c mg_config_check).
MAX_EMBD, MAX_VOCAB, MAX_BLOCK, MAX_LAYER = 1 << 20, 1 << 24, 1 << 20, 1 << 12
MAX_ROWS = 1 << 30  # positions in one batch
MAX_NEW_TOKENS = 1 << 20  # longer samples take Python's loop (csrc/module.c)


class CEngine(Engine):
    """The reference model in C: float64 for parity, float32 for speed."""

    name = "c"
    dtypes = ("float64", "float32")

    def __init__(
        self,
        config: ModelConfig,
        optim: OptimConfig,
        vocab_size: int,
        params: dict[str, Tensor],
        dtype: str = "float64",
    ):
        super().__init__(config, optim, vocab_size, params, dtype)
        check_sizes(config, vocab_size)
        self.shapes = check_params(config, vocab_size, params)  # the state_dict's order
        if dtype == "float64":
            Model = Model64
        else:
            from ._core32 import Model
        self._core = Model(
            config.n_layer, config.n_embd, config.n_head, config.block_size, vocab_size,
            config.mlp == "relu2", optim.beta1, optim.beta2, optim.eps_adam,
        )  # fmt: skip
        self._core.load(PARAMS, self._flat(params, "weights"))

    @classmethod
    def memory_estimate(cls, config: ModelConfig, vocab_size: int, batch_size: int,
                        dtype: str) -> int:  # fmt: skip
        """Bytes this engine allocates: weights, gradients and Adam's two moments in C; what
        Python holds beside them, 64 bytes a weight at most (the weights as drawn: Python
        floats, then an array; a checkpoint's weights and moments read back: bytes, array,
        tensors); and the activations of a batch of batch_size sequences of block_size
        positions (none for batch_size 0: the weights alone)."""
        check_sizes(config, vocab_size)
        real = 4 if dtype == "float32" else 8
        rows = min(batch_size * config.block_size, MAX_ROWS)
        acts = acts_bytes(config.n_layer, config.n_embd, config.n_head,
                          config.block_size, vocab_size, rows) if rows else 0  # fmt: skip
        params = num_params(config, vocab_size)
        return 4 * params * real + 64 * params + acts * real // 8

    # --- checks before anything reaches C ----------------------------------------------------
    def _check_batch(self, batch: list[list[int]]) -> None:
        """Each sequence 1 to block_size + 1 tokens, at least one position to predict, every
        id in the vocabulary (the C binding checks again; this says it as an EngineError)."""
        if not isinstance(batch, list) or not batch or not all(type(s) is list for s in batch):
            raise EngineError("a batch is a non-empty list of token sequences (lists)")
        lens, longest = list(map(len, batch)), self.config.block_size + 1
        if min(lens) < 1 or max(lens) > longest or lens == [1]:
            self._bad_length(next((n for n in lens if not 1 <= n <= longest), 1))
        rows = sum(lens) - len(lens)
        if rows == 0 or rows > MAX_ROWS:
            raise EngineError(f"a batch of {rows} positions: it needs 1 to {MAX_ROWS}")
        if min(map(min, batch)) < 0 or max(map(max, batch)) >= self.vocab_size:
            raise EngineError(f"token ids must be integers in 0..{self.vocab_size - 1} "
                              "(the vocabulary)")  # fmt: skip

    def _check_ids(self, seq: list[int], V: int) -> None:
        if not isinstance(seq, list) or (seq and (min(seq) < 0 or max(seq) >= V)):
            raise EngineError(f"token ids must be integers in 0..{V - 1} (the vocabulary)")

    def _check_tokens(self, tokens: list[int]) -> None:
        if not 1 <= len(tokens) <= self.config.block_size:
            self._bad_length(len(tokens) + 1)
        self._check_ids(tokens, self.vocab_size)

    def _bad_length(self, n: int):
        raise EngineError(
            f"a sequence of {n} tokens does not fit: the model reads 1 to block_size "
            f"({self.config.block_size}) tokens and predicts the next"
        )

    # --- training -----------------------------------------------------------------------------
    def forward_backward(self, batch: list[list[int]]) -> float:
        self._check_batch(batch)
        return self._core.forward_backward(batch)

    def adam_step(self, lr: float, t: int) -> None:
        if not (isinstance(t, int) and t >= 1):
            raise EngineError(f"Adam's step counts from 1, got {t!r}")
        self._core.adam_step(lr, t)

    def train_steps(self, batches: list[list[list[int]]], lrs: list[float], t0: int) -> list[float]:
        """Every step in one C call (csrc mg_train_steps), with the loop's semantics."""
        if len(lrs) != len(batches) or not (isinstance(t0, int) and t0 >= 1):
            raise EngineError("train_steps needs one learning rate per batch and t0 >= 1")
        for batch in batches:
            self._check_batch(batch)
        return self._core.train_steps(batches, [float(lr) for lr in lrs], t0)

    def loss(self, batch: list[list[int]]) -> float:
        self._check_batch(batch)
        return self._core.loss(batch)

    # --- state --------------------------------------------------------------------------------
    def _flat(self, tensors: dict[str, Tensor], what: str) -> array:
        flat = array("d")
        for name, shape in self.shapes.items():
            t = tensors.get(name)
            if t is None or tuple(t.shape) != shape:
                raise EngineError(f"{what} for {name} is missing or has the wrong shape")
            flat.extend(t.data)
        return flat

    def _tensors(self, which: int) -> dict[str, Tensor]:
        flat = array("d")
        flat.frombytes(self._core.store(which))
        out, at = {}, 0
        for name, (rows, cols) in self.shapes.items():
            out[name] = Tensor((rows, cols), flat[at : at + rows * cols])
            at += rows * cols
        return out

    def parameters(self) -> dict[str, Tensor]:
        return self._tensors(PARAMS)

    def gradients(self) -> dict[str, Tensor]:
        return self._tensors(GRADS)

    def optimizer_state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return self._tensors(ADAM_M), self._tensors(ADAM_V)

    def load_optimizer_state(self, m: dict[str, Tensor], v: dict[str, Tensor]) -> None:
        self._core.load(ADAM_M, self._flat(m, "Adam's first moment"))
        self._core.load(ADAM_V, self._flat(v, "Adam's second moment"))

    # --- inference ------------------------------------------------------------------------------
    def forward(self, tokens: list[int]) -> list[list[float]]:
        self._check_tokens(tokens)
        return self._core.forward(tokens)

    def attention(self, tokens: list[int]) -> list[list[list[list[float]]]]:
        self._check_tokens(tokens)
        return self._core.attention(tokens)

    def new_cache(self) -> Any:
        return self._core.new_cache()

    def decode(self, cache: Any, token_id: int, pos_id: int) -> list[float]:
        block_size = self.config.block_size
        if cache.n >= block_size or not 0 <= pos_id < block_size:
            raise EngineError(f"cannot decode past block_size ({block_size}) positions")
        self._check_ids([token_id], self.vocab_size)
        return self._core.decode(cache, token_id, pos_id)

    def generate(
        self,
        rng: random.Random,
        count: int,
        temperature: float,
        max_new_tokens: int,
        prompt: list[int],
        top_k: int | None,
        stop_after: int | None,
        bos: int,
    ) -> list[tuple[list[int], float, int, bool]] | None:
        """Whole samples in C (csrc mg_generate), drawing from `rng`'s own Mersenne Twister
        state and handing the advanced state back: the samples and the stream are exactly
        those of sample.generate_sample's Python loop."""
        if type(rng) is not random.Random or max(max_new_tokens, count) > MAX_NEW_TOKENS:
            return None  # a subclass may draw differently; a huge request takes the loop
        if not (math.isfinite(temperature) and temperature >= 0) or max_new_tokens < 0:
            raise EngineError("sampling needs a finite temperature >= 0 and max_new_tokens >= 0")
        if top_k is not None and top_k < 1:
            raise EngineError(f"top_k must be at least 1, got {top_k}")
        self._check_ids(prompt, self.vocab_size)
        self._check_ids([bos], self.vocab_size)
        version, state, gauss_next = rng.getstate()
        samples, state = self._core.generate(
            state, count, float(temperature), top_k or 0, max_new_tokens, prompt,
            -1 if stop_after is None else min(stop_after, MAX_NEW_TOKENS), bos,
        )  # fmt: skip
        rng.setstate((version, state, gauss_next))
        return samples


def check_sizes(config: ModelConfig, vocab_size: int) -> None:
    """Sizes the C core's int arithmetic holds (far past anything this machine could train)."""
    for name, value, top in (("n_embd", config.n_embd, MAX_EMBD),
                             ("vocab size", vocab_size, MAX_VOCAB),
                             ("block_size", config.block_size, MAX_BLOCK),
                             ("n_layer", config.n_layer, MAX_LAYER)):  # fmt: skip
        if not 1 <= value <= top:
            raise EngineError(f"the c engine takes {name} up to {top}, got {value}")
    if config.n_embd % config.n_head:
        raise EngineError(f"n_embd ({config.n_embd}) must be divisible by n_head")
