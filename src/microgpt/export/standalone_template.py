"""HEADER: replaced by `microgpt export` with what the file is and what was measured."""

# ruff: noqa: B905  (zip without strict= runs on any Python 3; the exporter drops this line)
import argparse
import base64
import math
import os
import random
import struct

CONFIG = {"n_layer": 1, "n_embd": 16, "n_head": 4, "block_size": 16, "mlp": "relu"}
VOCAB = "ab"  # token i is VOCAB[i]; BOS = len(VOCAB) begins and ends a sample
DEFAULTS = {"temperature": 0.5, "num_samples": 20}
SHAPES = {"wte": [3, 16]}
QUANTIZATION = "none"
WEIGHTS = """"""
SCALES = """"""
BOS = len(VOCAB)


def load_weights():
    """{name: rows}; WEIGHTS is base85 of little-endian values, row after row."""
    raw = base64.b85decode("".join(WEIGHTS.split()))
    flat = struct.unpack(f"<{len(raw) // 8}d", raw)  # none: float64
    flat = struct.unpack(f"<{len(raw) // 2}e", raw)  # float16
    flat = struct.unpack(f"<{len(raw)}b", raw)  # int8
    flat = [(b >> s & 15) - 8 for b in raw for s in (0, 4)]  # int4: 2 per byte as q + 8, low first
    scales = base64.b85decode("".join(SCALES.split()))  # a float16 per row (int8, int4)
    scales = struct.unpack(f"<{len(scales) // 2}e", scales)
    sd, i, r = {}, 0, 0
    for name, (rows, cols) in SHAPES.items():
        sd[name] = []
        for _ in range(rows):  # w = q * scale of its row (symmetric)
            row = flat[i : i + cols]
            sd[name].append([q * scales[r] for q in row] if scales else list(row))
            i, r = i + cols, r + 1
    return sd


# microgpt's forward pass on floats in its operation order (sums chain from 0, a / b is
# a * b**-1): unquantized, its logits are bit for bit the reference engine's
def total(xs):
    s = 0
    for x in xs:
        s = s + x
    return s


def linear(x, w):
    return [total(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def softmax(logits):
    max_val = max(logits)
    exps = [math.exp(val - max_val) for val in logits]
    inv_total = total(exps) ** -1
    return [e * inv_total for e in exps]


def rmsnorm(x):
    scale = (total(xi * xi for xi in x) * len(x) ** -1 + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(token_id, pos_id, keys, values, sd):
    """Logits for the token after `token_id`; appends to the KV cache (keys, values)."""
    hd = CONFIG["n_embd"] // CONFIG["n_head"]  # head dimension
    x = rmsnorm([t + p for t, p in zip(sd["wte"][token_id], sd["wpe"][pos_id])])
    for li in range(CONFIG["n_layer"]):
        x_residual, x = x, rmsnorm(x)  # 1) multi-head attention
        q = linear(x, sd[f"layer{li}.attn_wq"])
        keys[li].append(linear(x, sd[f"layer{li}.attn_wk"]))
        values[li].append(linear(x, sd[f"layer{li}.attn_wv"]))
        x_attn = []
        for h in range(0, CONFIG["n_embd"], hd):
            w = softmax(
                [total(q[h + j] * k[h + j] for j in range(hd)) * (hd**0.5) ** -1 for k in keys[li]]
            )
            x_attn += [total(w[t] * v[h + j] for t, v in enumerate(values[li])) for j in range(hd)]
        x = [a + b for a, b in zip(linear(x_attn, sd[f"layer{li}.attn_wo"]), x_residual)]
        x_residual, x = x, linear(rmsnorm(x), sd[f"layer{li}.mlp_fc1"])  # 2) MLP
        x = [max(0, xi) ** 2 if CONFIG["mlp"] == "relu2" else max(0, xi) for xi in x]
        x = [a + b for a, b in zip(linear(x, sd[f"layer{li}.mlp_fc2"]), x_residual)]
    return linear(x, sd["lm_head"])


def generate(sd, rng, temperature, top_k=0, prompt=()):
    """Token ids of a sample: the prompt, then draws until BOS or a full context."""
    cache = [[] for _ in range(CONFIG["n_layer"])], [[] for _ in range(CONFIG["n_layer"])]
    token_id, out = BOS, []
    for pos_id in range(CONFIG["block_size"]):
        logits = gpt(token_id, pos_id, *cache, sd)
        if pos_id < len(prompt):
            token_id = prompt[pos_id]
        elif temperature == 0:  # greedy (ties: the lower id)
            token_id = max(range(len(logits)), key=logits.__getitem__)
        else:
            if top_k:  # only the k most likely (ties: the lower id)
                keep = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:top_k]
                logits = [lg if i in keep else -math.inf for i, lg in enumerate(logits)]
            probs = softmax([lg * temperature**-1 for lg in logits])  # microgpt.sample's order
            token_id = rng.choices(range(len(logits)), weights=probs)[0]
        if token_id == BOS:
            break
        out.append(token_id)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-samples", type=int, default=DEFAULTS["num_samples"])
    p.add_argument("--temperature", type=float, default=DEFAULTS["temperature"], help="0: greedy")
    p.add_argument("--top-k", type=int, default=0, help="0: all tokens")
    p.add_argument("--prompt", default="", help="how samples start")
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args(argv)
    if set(a.prompt) - set(VOCAB) or len(a.prompt) >= CONFIG["block_size"]:
        p.error(f"--prompt takes fewer than {CONFIG['block_size']} characters of {VOCAB!r}")
    if min(a.num_samples, a.top_k) < 0 or not (a.temperature == 0 or 1e-3 <= a.temperature < 1e99):
        p.error("--num-samples, --top-k >= 0; --temperature 0 or >= 0.001")
    sd, rng, prompt = load_weights(), random.Random(a.seed), [VOCAB.index(c) for c in a.prompt]
    for i in range(a.num_samples):
        ids = generate(sd, rng, a.temperature, a.top_k, prompt)
        print(f"sample {i + 1:2d}: {''.join(VOCAB[t] for t in ids)}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        os._exit(1)  # | head
