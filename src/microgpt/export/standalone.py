"""The standalone file: a trained model as one Python file that needs only the standard library.

`render` fills `standalone_template.py` (a real, linted Python file) with the model: each
data line (CONFIG, VOCAB, DEFAULTS, SHAPES, QUANTIZATION, WEIGHTS, SCALES) gets the
checkpoint's values, the header docstring says what the file is and what was measured, and
of the lines that end in a quantization's name (`# int8`) only the chosen one's stay.

Every byte counts (the default int8 names model fits in 12 KB), so the file draws with its
own `softmax([logit * temperature**-1 ...])`: the same float operations, in the same order,
as `microgpt.sample.probabilities`; tests/test_export.py checks the two agree bit for bit
and that a seed prints what `microgpt sample --seed` prints. Standard library only.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from ..checkpoint import Checkpoint
from .quantize import Quantized

TEMPLATE = Path(__file__).with_name("standalone_template.py")
LINE = 100  # characters per line of base85 text
# a line of the template that only one quantization needs ends in a comment naming it
MODE_LINE = re.compile(r"  # (none|float16|int8|int4)(:|$)")


def _block(blob: bytes) -> str:
    """Base85 text in lines of LINE characters inside a triple-quoted string."""
    text = base64.b85encode(blob).decode("ascii")  # alphabet has no quote or backslash
    if not text:
        return '""""""'
    lines = [text[i : i + LINE] for i in range(0, len(text), LINE)]
    return '"""\n' + "\n".join(lines) + '\n"""'


def data_lines(ckpt: Checkpoint, q: Quantized) -> dict[str, str]:
    """The right-hand side of each data line of the template."""
    config = {
        "n_layer": ckpt.model.n_layer,
        "n_embd": ckpt.model.n_embd,
        "n_head": ckpt.model.n_head,
        "block_size": ckpt.model.block_size,
        "mlp": ckpt.model.mlp,
    }
    defaults = {"temperature": ckpt.train.temperature, "num_samples": ckpt.train.num_samples}
    vocab = repr("".join(ckpt.uchars))
    return {
        "CONFIG": json.dumps(config, separators=(", ", ": ")),
        "VOCAB": vocab,
        "DEFAULTS": json.dumps(defaults),
        "SHAPES": json.dumps({k: list(v) for k, v in q.shapes.items()}, separators=(",", ":")),
        "QUANTIZATION": repr(q.mode),
        "WEIGHTS": _block(q.data),
        "SCALES": _block(q.scales),
    }


def safe_docstring(text: str) -> str:
    """Text that cannot end the docstring early or start an escape sequence."""
    return text.replace("\\", "/").replace('"""', "'''")


def render(ckpt: Checkpoint, q: Quantized, header: str) -> str:
    """The standalone file's source: `header` as its docstring, then the model and its code."""
    source = TEMPLATE.read_text(encoding="utf-8")
    first, rest = source.split("\n", 1)
    assert first.startswith('"""HEADER'), "the template must open with its HEADER docstring"
    out = ['"""' + safe_docstring(header).rstrip("\n") + '\n"""']
    values = data_lines(ckpt, q)
    for line in rest.split("\n"):
        name = line.split(" = ", 1)[0]
        if name in values and re.match(r"^[A-Z]+ = ", line):  # keep the line's comment
            comment = line[line.index("  # ") :] if "  # " in line else ""
            out.append(f"{name} = {values.pop(name)}{comment}")
        elif line.startswith("# ruff:"):
            continue
        elif (only := MODE_LINE.search(line)) and only.group(1) != q.mode:
            continue
        else:
            out.append(line)
    assert not values, f"template lacks the data lines {sorted(values)}"
    return "\n".join(out)
