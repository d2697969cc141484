"""The torch engine: the original microgpt as batched tensor code, on a CPU, a GPU or many.

The same function as the reference engine (RMSNorm without weights, no biases, ReLU or
ReLU squared MLP, no final norm before lm_head, mean cross-entropy over every predicted
token, the original's Adam), written the way nanoGPT writes it, with autograd doing the
backward pass. Parity tests hold it to the reference: in float64, loss and every gradient
within 1e-10 relative.

Shape letters: B sequences in a batch, T positions, C = n_embd, NH heads, HS = C // NH
head size, V vocabulary size.

Speed, where the device allows it:
  - attention through F.scaled_dot_product_attention (fused kernels on CUDA);
  - dtype "bfloat16" keeps float32 master weights and Adam moments and runs the forward and
    backward under bfloat16 autocast (the usual mixed precision);
  - dtype "float32" on CUDA lets matmuls use TF32 tensor cores (`tf32=True`);
  - `compile=True` wraps the training forward in torch.compile.

Many processes: under torchrun (WORLD_SIZE > 1) the engine joins the process group (gloo
on CPU, nccl on CUDA) and trains through torch's DistributedDataParallel; see
`forward_backward` for how the global batch is split and why each rank's loss is scaled.
"""

from __future__ import annotations

import atexit
import contextlib
import time
from array import array
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig, OptimConfig
from ..distributed import Launch, from_env, shard
from ..engine import DTYPE_BYTES, Engine, EngineError
from ..init import param_shapes
from ..tensor import Tensor

DEVICES = ("auto", "cpu", "cuda", "mps")
# The dtype the weights and Adam moments live in; bfloat16 is autocast over float32 masters.
STORAGE = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.float32}
IGNORE = -1  # target of a padding position: cross_entropy skips it


# --- the model --------------------------------------------------------------------------------


def rmsnorm(x: torch.Tensor) -> torch.Tensor:
    ms = (x * x).mean(dim=-1, keepdim=True)  # (..., 1)
    return x * (ms + 1e-5) ** -0.5  # (..., C)


@dataclass
class LayerKV:
    """One layer's cached keys and values, (1, NH, t, HS) after t decoded tokens."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


@dataclass
class KVCache:
    layers: list[LayerKV] = field(default_factory=list)


def attention_forward(
    x: torch.Tensor,
    w: dict[str, torch.Tensor],
    li: int,
    n_head: int,
    past: LayerKV | None = None,
    attn_out: list | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Causal multi-head self-attention of layer `li`; with `past`, one decoded position
    attends to every cached one (and is appended to the cache)."""
    B, T, C = x.shape
    HS = C // n_head
    q = F.linear(x, w[f"layer{li}.attn_wq"])  # (B, T, C)
    q = q.view(B, T, n_head, HS).transpose(1, 2)  # (B, NH, T, HS)
    k = F.linear(x, w[f"layer{li}.attn_wk"])  # (B, T, C)
    k = k.view(B, T, n_head, HS).transpose(1, 2)  # (B, NH, T, HS)
    v = F.linear(x, w[f"layer{li}.attn_wv"])  # (B, T, C)
    v = v.view(B, T, n_head, HS).transpose(1, 2)  # (B, NH, T, HS)
    causal = past is None
    if past is not None:
        # NOTE: only a single new position is decoded at a time; it is the last one, so it
        # sees every key and needs no mask (a causal mask would align it to the first key).
        assert T == 1, "KV-cached decoding feeds one token at a time"
        if past.k is not None:
            k = torch.cat([past.k, k], dim=2)  # (B, NH, t+1, HS)
            v = torch.cat([past.v, v], dim=2)  # (B, NH, t+1, HS)
        past.k, past.v = k, v
    if fused and attn_out is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, NH, T, HS)
    else:
        att = (q @ k.transpose(-2, -1)) / HS**0.5  # (B, NH, T, S)
        if causal:
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # (T, T)
            att = att.masked_fill(mask, float("-inf"))  # (B, NH, T, S)
        att = F.softmax(att, dim=-1)  # (B, NH, T, S)
        if attn_out is not None:
            attn_out.append(att)
        y = att @ v  # (B, NH, T, HS)
    y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side, as x_attn.extend
    return F.linear(y, w[f"layer{li}.attn_wo"])  # (B, T, C)


def mlp_forward(x: torch.Tensor, w: dict[str, torch.Tensor], li: int, mlp: str) -> torch.Tensor:
    h = F.linear(x, w[f"layer{li}.mlp_fc1"])  # (B, T, 4C)
    h = F.relu(h) ** 2 if mlp == "relu2" else F.relu(h)  # (B, T, 4C)
    return F.linear(h, w[f"layer{li}.mlp_fc2"])  # (B, T, C)


def gpt_forward(
    w: dict[str, torch.Tensor],
    idx: torch.Tensor,
    config: ModelConfig,
    pos0: int = 0,
    cache: KVCache | None = None,
    attn_out: list | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Logits (B, T, V) for tokens `idx` (B, T) at positions pos0 .. pos0+T-1."""
    B, T = idx.shape
    pos = torch.arange(pos0, pos0 + T, device=idx.device)  # (T,)
    x = w["wte"][idx] + w["wpe"][pos]  # (B, T, C) joint token and position embedding
    x = rmsnorm(x)  # (B, T, C) not redundant: the residual stream starts normalised
    for li in range(config.n_layer):
        # 1) multi-head attention block
        x_residual = x
        x = rmsnorm(x)  # (B, T, C)
        past = cache.layers[li] if cache is not None else None
        x = attention_forward(x, w, li, config.n_head, past, attn_out, fused)  # (B, T, C)
        x = x + x_residual  # (B, T, C)
        # 2) MLP block
        x_residual = x
        x = rmsnorm(x)  # (B, T, C)
        x = mlp_forward(x, w, li, config.mlp)  # (B, T, C)
        x = x + x_residual  # (B, T, C)
    return F.linear(x, w["lm_head"])  # (B, T, V)


class GPT(nn.Module):
    """The weights as one nn.Module (what DDP wraps), in the original's state_dict order.

    NOTE: module attribute names cannot contain dots ("layer0.attn_wq"), so the weights sit
    in a ParameterList beside the list of their names.
    """

    def __init__(self, config: ModelConfig, weights: dict[str, torch.Tensor], fused: bool):
        super().__init__()
        self.config = config
        self.fused = fused
        self.names = list(weights)
        self.weights = nn.ParameterList([nn.Parameter(t) for t in weights.values()])

    def named(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.weights, strict=True))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum of the cross-entropies at every target that is not IGNORE (a scalar)."""
        logits = gpt_forward(self.named(), idx, self.config, fused=self.fused)  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        )


# --- devices, process groups ------------------------------------------------------------------


def pick_device(device: str, dtype: str, launch: Launch) -> torch.device:
    """The torch device for --device (auto: CUDA, else MPS where the dtype allows, else CPU)."""
    if device not in DEVICES:
        raise EngineError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    has_mps = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif has_mps and dtype != "float64" and not launch.distributed:
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise EngineError("no CUDA device is available here; use --device cpu (or auto)")
        if launch.local_rank >= torch.cuda.device_count():
            raise EngineError(
                f"local rank {launch.local_rank} has no GPU ({torch.cuda.device_count()} "
                "visible); start at most one process per GPU (--nproc_per_node)"
            )
        return torch.device("cuda", launch.local_rank)
    if device == "mps":
        if not has_mps:
            raise EngineError("no Apple MPS device is available here; use --device cpu (or auto)")
        if dtype == "float64":
            raise EngineError("MPS has no float64; use --dtype float32 or bfloat16 on MPS")
        if launch.distributed:
            raise EngineError("distributed training on MPS is not supported; use --device cpu")
    return torch.device(device)


def join_process_group(device: torch.device) -> None:
    """Join torchrun's process group once: nccl between GPUs, gloo between CPUs."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    atexit.register(close)  # leave the group at exit; torch warns when a rank does not


def to_torch(t: Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    flat = torch.frombuffer(t.data, dtype=torch.float64)  # shares the array's memory
    return flat.reshape(t.shape).to(device=device, dtype=dtype, copy=True)


def to_tensor(x: torch.Tensor) -> Tensor:
    data = array("d")
    data.frombytes(x.detach().to(device="cpu", dtype=torch.float64).contiguous().numpy().tobytes())
    return Tensor(tuple(x.shape), data)


# --- the engine -------------------------------------------------------------------------------


class TorchEngine(Engine):
    """The model on torch tensors: one process, or one rank of a DDP job under torchrun.

    Weights come in and go out as float64 `Tensor`s; in between they live on `device` in
    the storage dtype (float32 masters for bfloat16).
    """

    name = "torch"
    dtypes = ("float64", "float32", "bfloat16")

    @classmethod
    def memory_estimate(cls, config, vocab_size, batch_size, dtype):
        """The default, plus two more (positions, vocabulary) arrays: autograd keeps the
        logits' log-softmax and gradient besides them (measured: 384 MiB of growth for a
        30,000-character vocabulary at batch 32 x 16, which the default put at 304)."""
        item = 4 if dtype == "bfloat16" else DTYPE_BYTES[dtype]  # float32 masters for bfloat16
        logits = batch_size * config.block_size * vocab_size
        return super().memory_estimate(config, vocab_size, batch_size, dtype) + 2 * item * logits

    def __init__(
        self,
        config: ModelConfig,
        optim: OptimConfig,
        vocab_size: int,
        params: dict[str, Tensor],
        dtype: str = "float64",
        *,
        device: str = "auto",
        compile: bool = False,
        fused: bool = True,
        tf32: bool = True,
        distributed: bool | None = None,
    ):
        super().__init__(config, optim, vocab_size, params, dtype)
        launch = from_env()
        if distributed is False:
            launch = Launch()
        self.launch = launch
        self.device = pick_device(device, dtype, launch)
        if self.device.type == "cuda" and dtype != "float64" and tf32:
            # TF32 matmuls: ~10 bits of mantissa in the products, float32 accumulation.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # a fresh context each time: bfloat16 autocast over float32 weights, else nothing
        self.autocast = (
            (lambda: torch.autocast(device_type=self.device.type, dtype=torch.bfloat16))
            if dtype == "bfloat16"
            else contextlib.nullcontext
        )
        storage = STORAGE[dtype]
        order = param_shapes(config, vocab_size)
        weights = {k: to_torch(params[k], storage, self.device) for k in order}
        self.model = GPT(config, weights, fused)
        self.fused = fused
        self.compiled = compile
        self.train_model: nn.Module = torch.compile(self.model) if compile else self.model
        if launch.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            join_process_group(self.device)
            # DDP broadcasts rank 0's weights now and averages gradients in backward.
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.train_model, device_ids=ids)
        self.m = [torch.zeros_like(p) for p in self.model.weights]  # first moment buffers
        self.v = [torch.zeros_like(p) for p in self.model.weights]  # second moment buffers
        # what this process did, for the end-of-run summary
        self.stats = {"steps": 0, "sequences": 0, "tokens": 0, "global_tokens": 0, "seconds": 0.0}

    # --- training ---------------------------------------------------------------------------
    def _pad(
        self, seqs: list[list[int]], T: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (B, T), padded at the end; padded targets are IGNORE.

        Padding changes nothing: attention is causal, so no real position sees a pad, and
        cross_entropy skips IGNORE targets."""
        T = T or max(len(s) - 1 for s in seqs)
        idx = [s[:-1] + [0] * (T - len(s) + 1) for s in seqs]
        tgt = [s[1:] + [IGNORE] * (T - len(s) + 1) for s in seqs]
        as_tensor = lambda rows: torch.tensor(rows, dtype=torch.long, device=self.device)
        return as_tensor(idx), as_tensor(tgt)  # (B, T), (B, T)

    def forward_backward(self, batch):
        """Mean cross-entropy over every predicted token of the (global) batch.

        Under DDP every rank is handed the same global batch and trains on its shard
        (sequences rank, rank + W, ...). DDP averages gradients: grad = (1/W) sum_r grad_r.
        We want the single-process gradient of (1/N) sum over all N tokens of the batch,
        so each rank backpropagates (W / N) * (its own sum of cross-entropies); the average
        is then (1/N) sum over all tokens. Scaling by 1/(own tokens) instead would weight
        a rank's short documents more than a single process does.
        """
        t0 = time.perf_counter()
        W, rank = self.launch.world_size, self.launch.rank
        local = shard(batch, rank, W)
        if not local:
            raise EngineError(f"rank {rank} got no sequence from a batch of {len(batch)}")
        n_global = sum(len(s) - 1 for s in batch)
        # compiled: always pad to block_size, one static shape, one graph (no recompiles)
        idx, targets = self._pad(local, self.config.block_size if self.compiled else None)
        for p in self.model.weights:
            p.grad = None
        with self.autocast():
            ce_sum = self.train_model(idx, targets)  # scalar
        (ce_sum * (W / n_global)).backward()
        total = ce_sum.detach().to(torch.float64)
        if self.launch.distributed:
            import torch.distributed as dist

            # only for the printed loss; gradients were averaged by DDP in backward
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        loss = total.item() / n_global
        self.stats["steps"] += 1
        self.stats["sequences"] += len(local)
        self.stats["tokens"] += sum(len(s) - 1 for s in local)
        self.stats["global_tokens"] += n_global
        self.stats["seconds"] += time.perf_counter() - t0
        return loss

    @torch.no_grad()
    def adam_step(self, lr, t):
        t0 = time.perf_counter()
        beta1, beta2, eps_adam = self.optim.beta1, self.optim.beta2, self.optim.eps_adam
        for p, m, v in zip(self.model.weights, self.m, self.v, strict=True):
            g = p.grad  # NOTE: identical on every rank after DDP's all-reduce
            m.mul_(beta1).add_((1 - beta1) * g)  # m = beta1 * m + (1 - beta1) * g
            v.mul_(beta2).add_((1 - beta2) * g**2)  # v = beta2 * v + (1 - beta2) * g**2
            m_hat = m / (1 - beta1**t)
            v_hat = v / (1 - beta2**t)
            p.sub_(lr * m_hat / (v_hat**0.5 + eps_adam))
            p.grad = None
        self.stats["seconds"] += time.perf_counter() - t0

    def agree_stop(self, signum: int) -> int:
        """The stop request all ranks agree on: the largest signal number any rank caught
        since the last step (0: none), so that every rank stops before the same step.

        Under torchrun a SIGINT/SIGTERM reaches the ranks at different moments; a rank that
        stopped alone would leave the others waiting in DDP's all-reduce for it. The CLI
        asks this before every step, on every rank (the same number of collectives)."""
        if not self.launch.distributed:
            return signum
        import torch.distributed as dist

        flag = torch.tensor([signum], dtype=torch.int64, device=self.device)  # (1,)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def summary(self) -> str:
        """One line on what this process trained, and how fast."""
        s, launch = self.stats, self.launch
        rate = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
        who, of = "", ""
        if launch.distributed:
            who, of = f"rank {launch.rank}/{launch.world_size} ", f" of {s['global_tokens']}"
        return (
            f"torch engine {who}on {self.device} ({self.dtype}): {s['steps']} steps, "
            f"{s['sequences']} sequences, {s['tokens']}{of} tokens, "
            f"{s['seconds']:.2f} s, {rate:,.0f} tokens/s"
        )

    # --- state ------------------------------------------------------------------------------
    def parameters(self):
        return {k: to_tensor(p) for k, p in self.model.named().items()}

    def gradients(self):
        return {
            k: to_tensor(p.grad if p.grad is not None else torch.zeros_like(p))
            for k, p in self.model.named().items()
        }

    def optimizer_state(self):
        names = self.model.names
        return (
            {k: to_tensor(m) for k, m in zip(names, self.m, strict=True)},
            {k: to_tensor(v) for k, v in zip(names, self.v, strict=True)},
        )

    def load_optimizer_state(self, m, v):
        storage = STORAGE[self.dtype]
        self.m = [to_torch(m[k], storage, self.device) for k in self.model.names]
        self.v = [to_torch(v[k], storage, self.device) for k in self.model.names]

    # --- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _logits(self, idx, **kwargs) -> torch.Tensor:
        with self.autocast():
            out = gpt_forward(self.model.named(), idx, self.config, fused=self.fused, **kwargs)
        return out.to(torch.float64)

    def forward(self, tokens):
        idx = torch.tensor([tokens], dtype=torch.long, device=self.device)  # (1, T)
        return self._logits(idx)[0].tolist()  # T lists of V floats

    @torch.no_grad()
    def loss(self, batch):
        idx, targets = self._pad(batch)  # (B, T), (B, T)
        with self.autocast():
            ce_sum = self.model(idx, targets)  # scalar
        return ce_sum.item() / sum(len(s) - 1 for s in batch)

    def attention(self, tokens):
        idx = torch.tensor([tokens], dtype=torch.long, device=self.device)  # (1, T)
        maps: list[torch.Tensor] = []
        self._logits(idx, attn_out=maps)
        return [
            [[row[: t + 1] for t, row in enumerate(head)] for head in att[0].tolist()]
            for att in maps  # (1, NH, T, T) per layer
        ]

    def new_cache(self):
        return KVCache([LayerKV() for _ in range(self.config.n_layer)])

    def decode(self, cache, token_id, pos_id):
        idx = torch.tensor([[token_id]], dtype=torch.long, device=self.device)  # (1, 1)
        return self._logits(idx, pos0=pos_id, cache=cache)[0, 0].tolist()  # V floats


def close() -> None:
    """Leave torchrun's process group, if this process joined one (torch warns otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
