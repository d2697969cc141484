"""The model as an ONNX graph, built with the `onnx` package (an optional extra).

    inputs   input_ids     int64 (B, T)   token ids
             position_ids  int64 (B, T)   their positions, each < block_size
    output   logits        float32 (B, T, V)  logits for the next token at every position

The graph computes the original microgpt in float32 over whole sequences with a causal
mask (no KV cache: a runtime feeds the sequence so far). Weights are stored as chosen:
float32 (`none`), float16 (cast up), or int8/int4 with one float16-exact scale per row,
dequantized in the graph by DequantizeLinear (per-axis, axis 0, zero point 0), so the file
keeps the small integers and any ONNX runtime can run it. Opset 21 (the first with INT4).

Shapes: B batch, T sequence length, C n_embd, NH n_head, HS head dim, V vocab size.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ModuleNotFoundError as e:  # pragma: no cover - depends on the installation
    from .quantize import ExportError

    raise ExportError(
        f"--format onnx needs the {e.name!r} package; install it with: "
        "pip install 'microgpt-lab[onnx]'"
    ) from None

from ..checkpoint import Checkpoint
from .quantize import Quantized

OPSET = 21


class _Graph:
    """A little builder: each `op` call adds one node and returns its output's name."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out


def _weight(g: _Graph, name: str, q: Quantized, flat, offsets) -> str:
    """The float32 (rows, cols) matrix `name` as stored in the chosen quantization."""
    rows, cols = q.shapes[name]
    begin, row0 = offsets[name]
    values = flat[begin : begin + rows * cols].reshape(rows, cols)  # (rows, cols)
    if q.mode == "none":
        return g.const(name, values.astype(np.float32))
    if q.mode == "float16":
        return g.op("Cast", g.const(name, values.astype(np.float16)), to=TensorProto.FLOAT)
    scales = np.frombuffer(q.scales, dtype="<f2")[row0 : row0 + rows].astype(np.float32)  # (rows,)
    ints = np.zeros_like(values, dtype=np.int64)
    nonzero = scales != 0
    ints[nonzero] = np.rint(values[nonzero] / scales[nonzero, None])  # exact: w' = q * scale
    if q.mode == "int8":
        w = g.const(name, ints.astype(np.int8))
        zero = g.const(f"{name}.zero", np.zeros(rows, dtype=np.int8))
    else:  # int4: onnx packs two per byte in the file
        w = f"{name}"
        g.inits.append(
            helper.make_tensor(name, TensorProto.INT4, [rows, cols], ints.flatten().tolist())
        )
        zero = f"{name}.zero"
        g.inits.append(helper.make_tensor(zero, TensorProto.INT4, [rows], [0] * rows))
    scale = g.const(f"{name}.scale", scales)
    return g.op("DequantizeLinear", w, scale, zero, axis=0)


def build(ckpt: Checkpoint, q: Quantized) -> onnx.ModelProto:
    """The ONNX model of `q`'s (dequantized) weights; passes onnx.checker."""
    cfg = ckpt.model
    C, NH, HS = cfg.n_embd, cfg.n_head, cfg.head_dim
    V = len(ckpt.uchars) + 1
    flat = np.array(q.values(), dtype=np.float64)  # every dequantized weight
    offsets, begin, row0 = {}, 0, 0
    for name, (rows, cols) in q.shapes.items():
        offsets[name] = (begin, row0)
        begin, row0 = begin + rows * cols, row0 + rows

    g = _Graph()
    W = {name: _weight(g, name, q, flat, offsets) for name in q.shapes}
    WT = {
        name: g.op("Transpose", w, perm=[1, 0])
        for name, w in W.items()
        if name not in ("wte", "wpe")
    }  # (in, out) for x @ W^T
    last_axis = g.const("axes_last", np.array([-1], dtype=np.int64))
    eps = g.const("rms_eps", np.array(1e-5, dtype=np.float32))
    minus_half = g.const("minus_half", np.array(-0.5, dtype=np.float32))

    def rmsnorm(x):  # x * (mean(x^2) + 1e-5) ** -0.5 over the last axis
        ms = g.op("ReduceMean", g.op("Mul", x, x), last_axis, keepdims=1)  # (B, T, 1)
        return g.op("Mul", x, g.op("Pow", g.op("Add", ms, eps), minus_half))  # (B, T, C)

    heads = g.const("shape_heads", np.array([0, 0, NH, HS], dtype=np.int64))
    merged = g.const("shape_merged", np.array([0, 0, C], dtype=np.int64))
    inv_sqrt = g.const("inv_sqrt_hs", np.array(1 / math.sqrt(HS), dtype=np.float32))
    # causal mask: position t sees s <= t
    seq = g.op("Gather", g.op("Shape", "input_ids"), g.const("one", np.array(1, np.int64)))
    tt = g.op(
        "Concat",
        g.op("Unsqueeze", seq, g.const("axes0", np.array([0], np.int64))),
        g.op("Unsqueeze", seq, "axes0"),
        axis=0,
    )  # [T, T]
    ones = g.op("ConstantOfShape", tt, value=helper.make_tensor("v", TensorProto.INT64, [1], [1]))
    causal = g.op("Cast", g.op("Trilu", ones, upper=0), to=TensorProto.BOOL)  # (T, T)
    neg_inf = g.const("neg_inf", np.array(-np.inf, dtype=np.float32))

    x = g.op(
        "Add",
        g.op("Gather", W["wte"], "input_ids", axis=0),
        g.op("Gather", W["wpe"], "position_ids", axis=0),
    )  # (B, T, C)
    x = rmsnorm(x)
    for li in range(cfg.n_layer):
        p = f"layer{li}."
        # 1) multi-head attention
        h = rmsnorm(x)
        q_ = g.op(
            "Transpose",
            g.op("Reshape", g.op("MatMul", h, WT[p + "attn_wq"]), heads),
            perm=[0, 2, 1, 3],
        )  # (B, NH, T, HS)
        k_ = g.op(
            "Transpose",
            g.op("Reshape", g.op("MatMul", h, WT[p + "attn_wk"]), heads),
            perm=[0, 2, 3, 1],
        )  # (B, NH, HS, T)
        v_ = g.op(
            "Transpose",
            g.op("Reshape", g.op("MatMul", h, WT[p + "attn_wv"]), heads),
            perm=[0, 2, 1, 3],
        )  # (B, NH, T, HS)
        att = g.op("Mul", g.op("MatMul", q_, k_), inv_sqrt)  # (B, NH, T, T)
        att = g.op("Softmax", g.op("Where", causal, att, neg_inf), axis=-1)  # (B, NH, T, T)
        y = g.op("Transpose", g.op("MatMul", att, v_), perm=[0, 2, 1, 3])  # (B, T, NH, HS)
        y = g.op("MatMul", g.op("Reshape", y, merged), WT[p + "attn_wo"])  # (B, T, C)
        x = g.op("Add", y, x)
        # 2) MLP
        h = g.op("Relu", g.op("MatMul", rmsnorm(x), WT[p + "mlp_fc1"]))  # (B, T, 4C)
        if cfg.mlp == "relu2":
            h = g.op("Mul", h, h)
        x = g.op("Add", g.op("MatMul", h, WT[p + "mlp_fc2"]), x)  # (B, T, C)
    g.nodes.append(helper.make_node("MatMul", [x, WT["lm_head"]], ["logits"]))  # (B, T, V)

    graph = helper.make_graph(
        g.nodes,
        "microgpt",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["B", "T"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", V])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="microgpt"
    )
    model.ir_version = 10  # onnxruntime reads IR 10 (opset 21) and later
    meta = {
        "vocab": json.dumps(ckpt.uchars, ensure_ascii=False),
        "bos": str(V - 1),
        "block_size": str(cfg.block_size),
        "quantization": q.mode,
    }
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model, full_check=True)
    return model


# --- measuring with onnxruntime ---------------------------------------------------------------


def session(path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one core, like the standalone file
    # NOTE: by default onnxruntime fuses DequantizeLinear -> MatMul into an integer MatMul
    # that also quantizes the activations to 8 bits on the fly (logits off by ~1e-2); we
    # keep the graph's meaning: dequantize the weights, multiply in float32.
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_logits(sess, token_ids: list[list[int]]):
    """float32 logits (B, T, V) for equal-length sequences."""
    ids = np.asarray(token_ids, dtype=np.int64)  # (B, T)
    pos = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape)  # (B, T)
    return sess.run(["logits"], {"input_ids": ids, "position_ids": np.ascontiguousarray(pos)})[0]


def onnx_loss(path: Path, ckpt: Checkpoint, docs: list[str]) -> tuple[float, int]:
    """Mean loss per predicted token of the ONNX file over `docs` (windows as in evaluate)."""
    from ..evaluate import windows

    sess, tok = session(path), ckpt.tokenizer
    seqs = [w for d in docs for w in windows(tok.doc_tokens(d), ckpt.model.block_size)]
    by_len: dict[int, list[list[int]]] = {}
    for s in seqs:
        by_len.setdefault(len(s), []).append(s)
    total, count = 0.0, 0
    for n, group in by_len.items():
        for i in range(0, len(group), 1024):
            batch = np.asarray(group[i : i + 1024], dtype=np.int64)  # (B, n)
            logits = run_logits(sess, batch[:, :-1]).astype(np.float64)  # (B, n-1, V)
            top = logits.max(axis=-1, keepdims=True)  # (B, n-1, 1)
            log_z = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))  # (B, n-1)
            picked = np.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]  # (B, n-1)
            total += float((log_z - picked).sum())
            count += batch.shape[0] * (n - 1)
    return total / count, count


BENCH = """
import json, random, sys, time
PEAK_RSS
from microgpt.export.onnx_export import probabilities_of, run_logits, session
sess = session(sys.argv[1])
n, T, bos, temperature = (int(a) if i < 3 else float(a) for i, a in enumerate(sys.argv[2:6]))
rng, tokens, start = random.Random(0), 0, time.perf_counter()
for _ in range(n):
    seq = [bos]
    for _ in range(T):  # no KV cache: the whole sequence so far, each step
        logits = run_logits(sess, [seq])[0, -1].astype(float).tolist()
        tokens += 1
        nxt = rng.choices(range(len(logits)), weights=probabilities_of(logits, temperature))[0]
        if nxt == bos:
            break
        seq.append(nxt)
seconds = time.perf_counter() - start
print(json.dumps({"tokens_per_s": tokens / seconds, "peak_rss_bytes": peak_rss()}))
"""


def _bench_script() -> str:
    from .measure import PEAK_RSS

    return BENCH.replace("PEAK_RSS", PEAK_RSS)


def probabilities_of(logits: list[float], temperature: float) -> list[float]:
    from ..sample import probabilities

    if temperature == 0:  # greedy, as microgpt.sample
        best = max(range(len(logits)), key=logits.__getitem__)
        return [float(i == best) for i in range(len(logits))]
    return probabilities(logits, temperature)


def measure(path: Path, ckpt: Checkpoint, report, docs, engine: str, data) -> None:
    """Fill `report` with onnxruntime's loss, speed and memory (when onnxruntime is there)."""
    from .measure import engine_loss

    try:
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        print(
            "microgpt: onnxruntime is not installed; loss, speed and memory not measured",
            file=sys.stderr,
        )
        return
    if docs is not None:
        report.data_path = str(data)
        report.loss_original, report.eval_tokens = engine_loss(ckpt, ckpt.params, docs, engine)
        report.loss_exported, _ = onnx_loss(path, ckpt, docs)
    args = [
        str(path),
        "20",
        str(ckpt.model.block_size),
        str(len(ckpt.uchars)),
        str(ckpt.train.temperature),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _bench_script(), *args], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"onnxruntime benchmark failed:\n{proc.stderr}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    report.tokens_per_s, report.peak_rss_bytes = stats["tokens_per_s"], stats["peak_rss_bytes"]
    report.runtime = f"onnxruntime {onnxruntime.__version__}, 1 thread, no KV cache"
