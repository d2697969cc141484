"""The engine interface: what the training loop, the sampler and the checkpoint talk to.

An engine holds the model's weights and Adam moments in whatever storage suits it (scalar
`Value`s, NumPy arrays, torch tensors) and computes one function: the original microgpt.
Everything else (data order, schedule, logging, checkpoints, sampling) lives once, outside
the engines, and reaches them only through this interface. Engines never import each other;
`load_engine` imports the one the user chose, and only then.
"""

from __future__ import annotations

import abc
import importlib
import math
from typing import Any, ClassVar

from .config import ModelConfig, OptimConfig
from .init import num_params, param_shapes
from .tensor import Tensor

# name -> (module, class, what to install when the import fails)
ENGINES: dict[str, tuple[str, str, str]] = {
    "c": (
        "microgpt.c_engine.model",
        "CEngine",
        "a C compiler (gcc or clang), then reinstall microgpt: pip install --no-deps "
        "--force-reinstall microgpt-lab, or pip install -e . in a checkout",
    ),
    "ref": ("microgpt.ref.model", "RefEngine", ""),
    "numpy": ("microgpt.numpy_engine.model", "NumpyEngine", "pip install numpy"),
    "torch": ("microgpt.torch_engine.model", "TorchEngine", "pip install 'microgpt-lab[torch]'"),
}

# The default engine: the first of these that loads here (the reference engine always does).
# The C engine is an optional compiled part of the install; NumPy is the fallback.
DEFAULT_ORDER = ("c", "numpy", "ref")
DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2}


class EngineError(Exception):
    """An engine that cannot be used here; the message says what to do."""


class Engine(abc.ABC):
    """One implementation of the model, its gradients and Adam.

    Token sequences are lists of ints of length n + 1 <= block_size + 1: the model reads
    tokens[:-1] at positions 0..n-1 and is scored on predicting tokens[1:].
    """

    name: ClassVar[str]
    dtypes: ClassVar[tuple[str, ...]] = ("float64",)

    def __init__(
        self,
        config: ModelConfig,
        optim: OptimConfig,
        vocab_size: int,
        params: dict[str, Tensor],
        dtype: str = "float64",
    ):
        if dtype not in self.dtypes:
            raise EngineError(
                f"the {self.name} engine supports --dtype {' or '.join(self.dtypes)}, not {dtype}"
            )
        self.config = config
        self.optim = optim
        self.vocab_size = vocab_size
        self.dtype = dtype

    @classmethod
    def memory_estimate(
        cls, config: ModelConfig, vocab_size: int, batch_size: int, dtype: str
    ) -> int:
        """Bytes the engine allocates to train on batches of `batch_size` sequences of
        block_size tokens (an upper bound; runs.py checks it before anything is allocated).

        This default counts an array engine's (NumPy's, torch's): the weights, gradients,
        Adam's two moments and two scratch buffers in `dtype`, plus the float64 copies made
        when the weights are drawn and a checkpoint is written; and one step's activations:
        per layer about 22 numbers per position and channel and six (T, T) attention arrays
        per head (probabilities, mask, gradients, scratch); 16 more per position and channel
        outside the layers; two of the logits (positions x vocabulary). In Python ints, so
        that a hostile config cannot overflow it.
        """
        item = DTYPE_BYTES.get(dtype, 8)
        C, L, H, T = config.n_embd, config.n_layer, config.n_head, config.block_size
        N = batch_size * T  # positions in a batch
        weights = num_params(config, vocab_size) * (6 * item + 3 * 8)
        activations = N * C * (16 + 22 * L) + 6 * L * batch_size * H * T * T + 2 * N * vocab_size
        return weights + item * activations

    # --- training ---------------------------------------------------------------------------
    @abc.abstractmethod
    def forward_backward(self, batch: list[list[int]]) -> float:
        """Mean cross-entropy over every predicted token of the batch; gradients are set
        (not accumulated) for the next `adam_step`."""

    @abc.abstractmethod
    def adam_step(self, lr: float, t: int) -> None:
        """One Adam update with learning rate `lr`; `t` (1-based) drives the bias correction.
        Clears the gradients, as the original does."""

    # --- state: weights, gradients, Adam moments, as float64 Tensors --------------------------
    @abc.abstractmethod
    def parameters(self) -> dict[str, Tensor]:
        """Every weight, keyed and ordered as the original's state_dict."""

    @abc.abstractmethod
    def gradients(self) -> dict[str, Tensor]:
        """d loss / d weight from the last forward_backward."""

    @abc.abstractmethod
    def optimizer_state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Adam's first and second moments (m, v), keyed as `parameters`."""

    @abc.abstractmethod
    def load_optimizer_state(self, m: dict[str, Tensor], v: dict[str, Tensor]) -> None:
        """Restore Adam's moments saved by `optimizer_state` (resume)."""

    # --- inference ------------------------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, tokens: list[int]) -> list[list[float]]:
        """Logits at every position of `tokens` (len <= block_size), no gradients."""

    @abc.abstractmethod
    def new_cache(self) -> Any:
        """An empty KV cache for incremental decoding: the engine's own typed object (a
        KVCache of per-layer keys and values), passed back to `decode` unchanged."""

    @abc.abstractmethod
    def decode(self, cache: Any, token_id: int, pos_id: int) -> list[float]:
        """Logits for the next token after feeding `token_id` at `pos_id`; extends `cache`."""

    def attention(self, tokens: list[int]) -> list[list[list[list[float]]]]:
        """Attention weights for `tokens` (len <= block_size), indexed [layer][head][t][s]:
        how much position t attends to position s <= t (each row sums to 1)."""
        raise NotImplementedError(f"the {self.name} engine does not expose attention weights")

    def train_steps(self, batches: list[list[list[int]]], lrs: list[float], t0: int) -> list[float]:
        """Several training steps in one call: step i is forward_backward(batches[i]) then
        adam_step(lrs[i], t0 + i). Returns the losses; at the first loss that is NaN or
        infinite it stops WITHOUT that step's update (the weights stay the last good ones),
        and that loss is the last one returned.

        This loop is the definition; an engine that can do it faster (without a Python call
        per step) overrides it, and the training loop then hands it several steps at once.
        """
        losses = []
        for i, (batch, lr) in enumerate(zip(batches, lrs, strict=True)):
            loss = self.forward_backward(batch)
            losses.append(loss)
            if not math.isfinite(loss):
                break
            self.adam_step(lr, t0 + i)
        return losses

    def generate(
        self,
        rng: Any,
        count: int,
        temperature: float,
        max_new_tokens: int,
        prompt: list[int],
        top_k: int | None,
        stop_after: int | None,
        bos: int,
    ) -> list[tuple[list[int], float, int, bool]] | None:
        """Whole samples made inside the engine, as (tokens, logprob, predicted, ended): up to
        `count` of them, each exactly what sample.generate_sample's loop makes with `rng`
        (the same draws, and `rng` advanced alike). Fewer than `count`: the loop takes over
        from there. None, as here: this engine has no such path, the loop makes them all."""
        return None

    # --- hooks the training loop calls; engines that need them override the no-op ------------
    def agree_stop(self, signum: int) -> int:
        """Under a multi-process launch, the stop request all processes agree on (nonzero:
        stop now, with that signal); alone, the request itself."""
        return signum

    def summary(self) -> str | None:
        """A line about what the engine did (device, tokens/s), said after training; None:
        nothing to say."""
        return None

    def loss(self, batch: list[list[int]]) -> float:
        """Mean cross-entropy over the batch's predicted tokens, without gradients.

        Engines may override this with a faster path; this one works from `forward`.
        """
        total, count = 0.0, 0
        for tokens in batch:
            for logits, target in zip(self.forward(tokens[:-1]), tokens[1:]):
                top = max(logits)
                log_z = top + math.log(sum(math.exp(x - top) for x in logits))
                total += log_z - logits[target]
                count += 1
        return total / count


def check_params(
    config: ModelConfig, vocab_size: int, params: dict[str, Tensor]
) -> dict[str, tuple[int, int]]:
    """The state_dict's shapes for this config (init.param_shapes, in the original's order),
    once `params` is known to hold exactly those tensors in those shapes (else EngineError)."""
    shapes = param_shapes(config, vocab_size)
    missing = [k for k in shapes if k not in params]
    if missing or len(params) != len(shapes):
        extra = sorted(set(params) - set(shapes))
        raise EngineError(
            f"weights do not match the model config (missing {missing[:3]}, "
            f"unexpected {extra[:3]}); use weights made for this config"
        )
    for name, shape in shapes.items():
        if tuple(params[name].shape) != shape:
            raise EngineError(
                f"weight {name} has shape {tuple(params[name].shape)}, the config needs "
                f"{shape}; use weights made for this config"
            )
    return shapes


def default_engine() -> str:
    """The fastest engine this installation can load, in DEFAULT_ORDER."""
    for name in DEFAULT_ORDER:
        try:
            load_engine(name)
        except EngineError:
            continue
        return name
    return "ref"


def load_engine(name: str) -> type[Engine]:
    """The engine class called `name`, imported now (and not before)."""
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module_name, class_name, install = ENGINES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            raise EngineError(f"the {name} engine is not part of this installation") from None
        package = module_name.rsplit(".", 1)[0]
        if e.name and e.name.startswith(package + "."):  # its compiled part was not built
            raise EngineError(f"the {name} engine was not compiled in this installation; it "
                              f"needs {install}") from None  # fmt: skip
        hint = f"; install it with: {install}" if install else ""
        raise EngineError(f"the {name} engine needs the {e.name!r} package{hint}") from None
    return getattr(module, class_name)
