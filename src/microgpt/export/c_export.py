"""The C export: a trained model as one dependency-free C99 file. Standard library only.

`render` fills `c_template.c` (the forward pass, the sampler, the embedding API and a host
`main` behind MICROGPT_MAIN) with the model: its sizes as macros, its weights as `const`
arrays in their stored form (float64, float16 bits, int8, or int4 nibbles, with a float16
scale per row, kept as a float), its vocabulary. `header_file` cuts the file's declarations
out as a `.h`.

    cc -std=c99 -O2 -DMICROGPT_MAIN -o model model.c -lm
    ./model --num-samples 10 --temperature 0.5 --prompt ka --seed 1

The rest runs such a file on this machine: `build` compiles it (the host's `cc`), `logits`,
`score` and `bench` run its `--logits`, `--score` and `--bench` modes. The tests and the
exporter's measurements use them; mcu.py does the same for a Cortex-M4 under QEMU.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

from ..checkpoint import Checkpoint
from ..evaluate import windows
from .quantize import ExportError, Quantized

TEMPLATE = Path(__file__).with_name("c_template.c")
PANEL = 16  # rows of a matrix whose sums advance together (matmul_forward; its unroll pragma)
ZERO = {"none": 0.0, "float16": 0, "int8": 0, "int4": 8}  # a stored 0 (int4 keeps q + 8)
EMBEDDINGS = ("wte", "wpe")  # looked up row by row; every other matrix is multiplied
STORAGE = {"none": "double", "float16": "uint16_t", "int8": "int8_t", "int4": "uint8_t"}
QUANT_MACRO = {"none": "MG_NONE", "float16": "MG_FLOAT16", "int8": "MG_INT8", "int4": "MG_INT4"}
WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror")
HEADER_GUARD = ("#ifndef MICROGPT_MODEL_H", "#endif /* MICROGPT_MODEL_H */")
LINE = 100


# --- the file --------------------------------------------------------------------------------


def stored_values(q: Quantized) -> dict[str, list]:
    """Each matrix's values as stored, row-major: floats (none), float16 bits, int8 values,
    or int4 nibbles (q + 8)."""
    n = q.num_values
    if q.mode == "none":
        flat = list(struct.unpack(f"<{n}d", q.data))
        if not all(math.isfinite(x) for x in flat):
            raise ExportError("the checkpoint holds a weight that is not finite; cannot export it")
    elif q.mode == "float16":
        flat = list(struct.unpack(f"<{n}H", q.data))
    elif q.mode == "int8":
        flat = list(struct.unpack(f"<{n}b", q.data))
    else:
        flat = [b >> s & 15 for b in q.data for s in (0, 4)][:n]
    out, i = {}, 0
    for name, (rows, cols) in q.shapes.items():
        out[name] = flat[i : i + rows * cols]
        i += rows * cols
    return out


def panel_order(values: list, rows: int, cols: int, panel: int, zero) -> list:
    """A row-major matrix in panels of `panel` rows, each panel column by column:
    w[r0 + p][c] lands at r0 * cols + c * panel + p; the last panel is padded with `zero`."""
    out = []
    for r0 in range(0, rows, panel):
        for c in range(cols):
            for p in range(panel):
                out.append(values[(r0 + p) * cols + c] if r0 + p < rows else zero)
    return out


def c_string(data: bytes) -> str:
    """A C string literal of `data`: printable ASCII as is, the rest as octal escapes (so no
    escape runs into the next character, and no trigraph can form)."""
    out = []
    for b in data:
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def wrap(items: list[str], indent: str = "    ") -> list[str]:
    """Comma-separated items in lines of at most LINE characters."""
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 2 > LINE and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += item + ", "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def literal(mode: str, x) -> str:
    return repr(float(x)) if mode == "none" else str(x)


def config_block(ckpt: Checkpoint, q: Quantized) -> str:
    m = ckpt.model
    hidden = q.shapes["layer0.mlp_fc1"][0] if m.n_layer else 4 * m.n_embd
    head_dim = m.n_embd // m.n_head
    vocab = len(ckpt.uchars) + 1
    # NOTE: Python computes these two as the reference does (len(x)**-1, (head_dim**0.5)**-1),
    # so the double build multiplies by exactly the reference's numbers.
    inv_n = m.n_embd**-1
    inv_sqrt_hd = (head_dim**0.5) ** -1
    rows = [
        ("MG_N_LAYER", m.n_layer, "transformer blocks"),
        ("MG_N_EMBD", m.n_embd, "C: embedding width"),
        ("MG_N_HEAD", m.n_head, "attention heads"),
        ("MG_HEAD_DIM", head_dim, "HS = C / heads"),
        ("MG_N_HIDDEN", hidden, "H: MLP width"),
        ("MG_BLOCK_SIZE", m.block_size, "T: context length"),
        ("MG_VOCAB", vocab, "V: the characters, then BOS"),
        ("MG_BOS", vocab - 1, "the token that begins and ends every text"),
        ("MG_RELU2", int(m.mlp == "relu2"), "1: the first revision's squared ReLU"),
        ("MG_NONE", 0, "weight storage: float64,"),
        ("MG_FLOAT16", 1, "float16 bits,"),
        ("MG_INT8", 2, "int8 with a scale per row,"),
        ("MG_INT4", 3, "int4, two per byte, with a scale per row"),
        ("MG_QUANT", QUANT_MACRO[q.mode], "this model's storage"),
        ("MG_DEFAULT_DOUBLE", int(q.mode == "none"), "compute in double unless MICROGPT_DOUBLE"),
        ("MG_PANEL", PANEL, "rows whose sums advance together (matmul_forward)"),
        ("MG_TEMPERATURE", repr(float(ckpt.train.temperature)), "the training run's sampling"),
        ("MG_NUM_SAMPLES", ckpt.train.num_samples, "defaults"),
        ("MG_INV_N_EMBD", f"((mg_real){inv_n!r})", "C**-1"),
        ("MG_INV_SQRT_HEAD_DIM", f"((mg_real){inv_sqrt_hd!r})", "(HS**0.5)**-1"),
    ]
    width = max(len(f"#define {name} {value}") for name, value, _ in rows)
    return "\n".join(
        f"{f'#define {name} {value}':<{width}}  /* {comment} */" for name, value, comment in rows
    )


def vocab_lines(uchars: list[str]) -> list[str]:
    """The vocabulary: every token's UTF-8 bytes in one string, and where each one starts."""
    starts, n = [], 0
    for ch in uchars:
        starts.append(n)
        n += len(ch.encode("utf-8"))
    starts.append(n)  # where BOS's (empty) text would start: the end
    offset = "unsigned short" if n < 65536 else "long"
    return [
        "/* token t's characters are mg_vocab[mg_vocab_at[t] .. mg_vocab_at[t + 1]) */",
        f"static const char mg_vocab[] = {c_string(''.join(uchars).encode('utf-8'))};",
        f"static const {offset} mg_vocab_at[MG_VOCAB] = {{",
        *wrap([str(s) for s in starts]),
        "};",
    ]


def weights_block(ckpt: Checkpoint, q: Quantized) -> tuple[str, str]:
    """(the arrays: weights, scales, vocabulary; the mg_params initializer)."""
    values = stored_values(q)
    storage = STORAGE[q.mode]
    lines = [f"typedef {storage} mg_weight; /* how one weight is stored */", ""]
    body, offsets, at = [], {}, 0
    for name, (rows, cols) in q.shapes.items():
        vals = values[name]
        layout = "row by row"
        if name not in EMBEDDINGS:
            vals = panel_order(vals, rows, cols, PANEL, ZERO[q.mode])
            layout = f"in panels of {PANEL} rows, column by column"
            if rows % PANEL:
                layout += f", {-rows % PANEL} zero rows at the end"
        if q.mode == "int4":
            vals = vals + [8] * (len(vals) % 2)  # each matrix starts on a byte: pad with a 0
            vals = [lo | hi << 4 for lo, hi in zip(vals[::2], vals[1::2])]
        offsets[name] = at
        at += len(vals)
        body.append(f"    /* {name} ({rows}, {cols}), {layout} */")
        body.extend(wrap([literal(q.mode, v) for v in vals]))
    what = "two int4 values (q + 8) per byte, low nibble first" if q.mode == "int4" else storage
    lines.append(f"/* every matrix's values ({what}), at the offsets mg_params gives */")
    lines.append(f"static const mg_weight mg_weights[{at}] = {{")
    lines += body
    lines.append("};")
    scale_at, row = {}, 0  # (where each matrix's scales start; rows so far)
    if q.mode in ("int8", "int4"):
        scales = struct.unpack(f"<{q.num_rows}e", q.scales)
        lines += ["", "/* one scale per row of every matrix, w = q * scale: float16 values */"]
        items, at = [], 0
        for name, (rows, _) in q.shapes.items():
            padding = 0 if name in EMBEDDINGS else -rows % PANEL  # as the panels: zeros
            scale_at[name] = at
            items.append(f"    /* {name} */")
            items.extend(wrap([f"{s!r}f" for s in [*scales[row : row + rows], *[0.0] * padding]]))
            row, at = row + rows, at + rows + padding
        lines.append(f"static const float mg_scales[{at}] = {{")
        lines += items
        lines.append("};")
    lines += ["", *vocab_lines(ckpt.uchars)]

    def matrix(name: str) -> str:
        scale = f"mg_scales + {scale_at[name]}" if scale_at else "NULL"
        return f"{{mg_weights + {offsets[name]}, {scale}}}"

    layers = range(ckpt.model.n_layer)
    params = ["static const mg_param_tensors mg_params = {"]
    params.append(f"    .wte = {matrix('wte')},")
    params.append(f"    .wpe = {matrix('wpe')},")
    for field in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2"):
        items = ", ".join(matrix(f"layer{i}.{field}") for i in layers)
        params.append(f"    .{field} = {{{items}}},")
    params.append(f"    .lm_head = {matrix('lm_head')},")
    params.append("};")
    return "\n".join(lines), "\n".join(params)


def weight_bytes(q: Quantized) -> int:
    """Bytes of the const arrays that hold the weights: the values as stored (multiplied
    matrices padded to whole panels) and the scales."""
    size = {"none": 8, "float16": 2, "int8": 1}
    total = 0
    for name, (rows, cols) in q.shapes.items():
        if name not in EMBEDDINGS:
            rows = -(-rows // PANEL) * PANEL
        total += (rows * cols + 1) // 2 if q.mode == "int4" else rows * cols * size[q.mode]
        total += 4 * rows if q.mode in ("int8", "int4") else 0  # float16 scales, kept as floats
    return total


def comment(text: str) -> str:
    """`text` as a C block comment (a `*/` inside cannot end it early)."""
    body = [f" * {line}".rstrip() for line in text.replace("*/", "* /").splitlines()]
    return "/*\n" + "\n".join(body) + "\n */"


def render(ckpt: Checkpoint, q: Quantized, header: str) -> str:
    """The C file's source: `header` as its opening comment, then the model and its code."""
    if ckpt.model.n_layer < 1:
        raise ExportError("the C export needs a model with at least one layer")
    source = TEMPLATE.read_text(encoding="utf-8")
    first, rest = source.split("\n", 1)
    assert first.startswith("/* @@HEADER@@"), "the template must open with its header marker"
    weights, params = weights_block(ckpt, q)
    for marker, text in [
        ("/* @@CONFIG@@ */", config_block(ckpt, q)),
        ("/* @@WEIGHTS@@ */", weights),
        ("/* @@PARAMS@@ */", params),
    ]:
        assert rest.count(marker) == 1, f"the template must hold {marker} once"
        rest = rest.replace(marker, text)
    return comment(header) + "\n" + rest


def header_file(source: str, name: str) -> str:
    """The `.h` beside the C file: its declarations (sizes, the state struct, the API)."""
    start, end = source.index(HEADER_GUARD[0]), source.index(HEADER_GUARD[1])
    lines = [
        f"/* The declarations of {name}: include this where you call the model, compile",
        f"   {name} once (without MICROGPT_MAIN), and build both with the same MICROGPT_DOUBLE",
        "   and MICROGPT_UNPACK (or MICROGPT_UNROLL): they set mg_model's layout. */",
    ]
    return "\n".join(lines) + "\n" + source[start : end + len(HEADER_GUARD[1])] + "\n"


# --- running it on this machine --------------------------------------------------------------


def find_cc(names: tuple[str, ...] = ("cc", "gcc", "clang")) -> str | None:
    """The host's C compiler: $CC, else the first of `names` on PATH."""
    env = os.environ.get("CC")
    candidates = [env] if env else list(names)
    for name in candidates:
        path = shutil.which(name)
        if path:
            return path
    return None


def build(
    source: Path,
    exe: Path,
    cc: str | None = None,
    double: bool | None = None,
    flags: tuple[str, ...] = ("-O2",),
) -> Path:
    """Compile `source` with its main into `exe`, warnings as errors; `double` overrides the
    file's default arithmetic. Raises RuntimeError with the compiler's messages."""
    cc = cc or find_cc()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")
    cmd = [cc, *WARNINGS, *flags, "-DMICROGPT_MAIN"]
    if double is not None:
        cmd.append(f"-DMICROGPT_DOUBLE={int(double)}")
    cmd += ["-o", str(exe), str(source), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or proc.stderr.strip():
        raise RuntimeError(f"{Path(cc).name} could not compile {source.name} cleanly "
                           f"({' '.join(cmd)}):\n{proc.stderr}")  # fmt: skip
    return exe


def run(exe: Path, *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(exe), *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{exe.name} {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def logits(exe: Path, tokens: list[int]) -> list[list[float]]:
    """The logits after each of `tokens` (at most block_size), from the file's --logits."""
    out = run(exe, "--logits", ",".join(map(str, tokens)))
    return [[float(x) for x in line.split()] for line in out.splitlines()]


def score(exe: Path, ckpt: Checkpoint, docs: list[str]) -> tuple[float, int]:
    """Mean loss per predicted token over `docs` and the token count, from the file's --score,
    over the windows microgpt.evaluate scores."""
    tok = ckpt.tokenizer
    seqs = [w for d in docs for w in windows(tok.doc_tokens(d), ckpt.model.block_size)]
    text = "\n".join(" ".join(map(str, s)) for s in seqs) + "\n"
    total, count = run(exe, "--score", stdin=text).split()
    return float(total) / int(count), int(count)


BENCH_LINE = re.compile(r"samples (\d+) tokens (\d+) seconds ([0-9.]+)")


def bench(exe: Path, samples: int, *args: str) -> tuple[int, float]:
    """(tokens, CPU seconds) of `samples` samples drawn by the file's --bench."""
    match = BENCH_LINE.fullmatch(run(exe, "--bench", str(samples), *args).strip())
    if match is None:
        raise RuntimeError(f"{exe.name} --bench printed something unexpected")
    return int(match.group(2)), float(match.group(3))
