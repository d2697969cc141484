"""Edge export: a trained model as one dependency-free Python file, an ONNX graph, or one
dependency-free C99 file for a microcontroller.

    from microgpt.export import export
    report = export("runs/names/model.safetensors", "model.py", fmt="py", quantize="int8",
                    data="names.txt")
    print(report.table())

The standalone file (`fmt="py"`) needs only Python's standard library; the ONNX file needs
the `onnx` package to build (`pip install 'microgpt-lab[onnx]'`) and any ONNX runtime to run;
the C file (`fmt="c"`, c_export.py) needs a C99 compiler and libm. Each is measured as it is
written: bytes, the mean loss per token of the exported weights against the original's on a
data file, and sampling speed and peak memory; the C file's loss and speed are its own
build's on this machine, and, where the Arm toolchain and QEMU are installed, its flash, RAM
and instructions per token on an emulated Cortex-M4F (mcu.py). The numbers go into the
report and, for the py and C files, into their headers.

An existing output file is never replaced unless `force=True` (`--force`); the file is
written atomically, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt_io
from ..data import sha256_bytes
from ..version import __version__
from .measure import PEAK_RSS, engine_loss, eval_docs
from .quantize import QUANTIZATIONS, ExportError, Quantized, quantize
from .standalone import render

FORMATS = ("py", "onnx", "c")
BENCH_SAMPLES = 200  # samples the exporter draws to time the standalone file
C_BENCH_SECONDS = 1.0  # CPU time the exporter samples the C build for

__all__ = ["FORMATS", "QUANTIZATIONS", "ExportError", "Report", "export", "quantize"]


@dataclass
class Report:
    """What an export wrote and what was measured (None: not measured)."""

    format: str
    quantization: str
    path: str
    checkpoint_sha256: str
    file_bytes: int = 0
    weight_bytes: int = 0
    num_values: int = 0
    data_path: str | None = None
    eval_tokens: int | None = None
    loss_original: float | None = None
    loss_exported: float | None = None
    tokens_per_s: float | None = None
    peak_rss_bytes: int | None = None
    peak_heap_bytes: int | None = None
    runtime: str = ""  # what ran the exported model for tokens/s and memory
    header_path: str | None = None  # the C file's .h, when one was written
    compute: str = ""  # the C build's arithmetic: "float32" or "float64"
    mcu_flash_bytes: int | None = None  # the C file on a Cortex-M4F (see mcu.McuStats)
    mcu_static_ram_bytes: int | None = None
    mcu_stack_bytes: int | None = None
    mcu_state_bytes: int | None = None
    mcu_instructions_per_token: float | None = None
    mcu_note: str = ""  # why the MCU was not measured, or what measured it

    @property
    def loss_delta(self) -> float | None:
        if self.loss_original is None or self.loss_exported is None:
            return None
        return self.loss_exported - self.loss_original

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines, shared by `table` and the standalone file's header."""
        delta = self.loss_delta
        loss = "not measured (pass --data FILE)"
        if delta is not None:
            loss = (
                f"{self.loss_exported:.6f} vs {self.loss_original:.6f} original (delta "
                f"{delta:+.1e}): mean per token, {self.eval_tokens:,} tokens of "
                f"{Path(self.data_path).name}"
            )
        speed = memory = "not measured"
        if self.tokens_per_s is not None:
            speed = f"{self.tokens_per_s:,.0f} tokens/s sampling ({self.runtime})"
        elif self.runtime:
            speed = f"not measured ({self.runtime})"
        if self.format == "c":
            return self.c_rows(loss, speed)
        if self.peak_rss_bytes is not None:
            memory = f"{self.peak_rss_bytes / 2**20:.1f} MiB peak RSS"
            if self.peak_heap_bytes is not None:
                memory += f", {self.peak_heap_bytes / 1024:.0f} KiB Python heap for one sample"
        return [
            ("file", f"{Path(self.path).name}, {self.file_bytes:,} bytes"),
            (
                "weights",
                f"{self.weight_bytes:,} bytes: {self.num_values:,} values, "
                f"{describe(self.quantization, self.format)}",
            ),
            ("loss", loss),
            ("speed", speed),
            ("memory", memory),
        ]

    def c_rows(self, loss: str, speed: str) -> list[tuple[str, str]]:
        name = Path(self.path).name
        if self.header_path:
            name += f" (and {Path(self.header_path).name})"
        mcu = mcu_speed = f"not measured ({self.mcu_note})"
        if self.mcu_flash_bytes is not None:
            ram = self.mcu_static_ram_bytes + self.mcu_stack_bytes
            mcu = (
                f"flash {self.mcu_flash_bytes:,} bytes, RAM {ram:,} bytes "
                f"({self.mcu_static_ram_bytes:,} static, {self.mcu_state_bytes:,} of them the "
                f"model state; {self.mcu_stack_bytes:,} peak stack): {self.mcu_note}"
            )
            per_token = self.mcu_instructions_per_token
            mcu_speed = (
                f"{per_token:,.0f} instructions per token (counted on the emulated core), "
                f"~{100e6 / per_token:,.0f} tokens/s at 100 MHz (estimate: one instruction "
                "per cycle)"
            )
        return [
            ("file", f"{name}, {self.file_bytes:,} bytes"),
            (
                "weights",
                f"{self.weight_bytes:,} bytes: {self.num_values:,} values, "
                f"{describe(self.quantization, self.format)}; computed in {self.compute}",
            ),
            ("loss", loss),
            ("speed", speed),
            ("mcu", mcu),
            ("mcu speed", mcu_speed),
        ]

    def table(self) -> str:
        width = max(len(label) for label, _ in self.rows())
        return "\n".join(f"{label:<{width}}  {value}" for label, value in self.rows())

    def to_json(self) -> str:
        fields = dict(self.__dict__, loss_delta=self.loss_delta)
        return json.dumps(fields)


def describe(mode: str, fmt: str = "py") -> str:
    return {
        "none": "float32" if fmt == "onnx" else "float64",
        "float16": "float16",
        "int8": "int8 per-row symmetric, float16 scales",
        "int4": "int4 per-row symmetric, float16 scales",
    }[mode] + (" (kept as float32)" if fmt == "c" and mode in ("int8", "int4") else "")


# --- checks before any work ------------------------------------------------------------------


def check_choice(fmt: str, mode: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if mode not in QUANTIZATIONS:
        choices = ", ".join(QUANTIZATIONS)
        raise ExportError(f"unknown quantization {mode!r}; choose one of {choices}")


def check_out(out: str | os.PathLike, force: bool, what: str = "--out") -> Path:
    """Refuse an output path we could not, or should not, write (`what`: how to name it)."""
    path = Path(out)
    if path.is_dir():
        raise ExportError(f"{what} {str(out)!r} is a directory; give a file path")
    if path.exists() and not force:
        raise ExportError(
            f"{what} {str(out)!r} already exists; choose another path or pass --force to "
            "replace it"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise ExportError(f"cannot write {what} {str(out)!r}: {str(parent)!r} {why}")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"cannot write {what} {str(out)!r}: {str(parent)!r} is not writable")
    return path


def _write(path: Path, blob: bytes) -> None:
    try:
        ckpt_io.write_atomic(path, blob)
    except OSError as e:
        raise ExportError(f"cannot write --out {str(path)!r}: {e.strerror or e}") from None


# --- measurements ----------------------------------------------------------------------------


# Runs the exported file's own functions under `python -I`, as a user's process would:
# sampling speed first, then the Python heap one sample needs (tracemalloc slows it down).
BENCH = """
import json, random, runpy, sys, time, tracemalloc
PEAK_RSS
m = runpy.run_path(sys.argv[1])
n, T, temperature = int(sys.argv[2]), m["CONFIG"]["block_size"], m["DEFAULTS"]["temperature"]
sd, rng = m["load_weights"](), random.Random(0)
tokens, start = 0, time.perf_counter()
for _ in range(n):
    tokens += min(len(m["generate"](sd, rng, temperature)) + 1, T)  # forward passes
seconds = time.perf_counter() - start
tracemalloc.start()
m["generate"](m["load_weights"](), rng, temperature)
heap = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
rss = peak_rss()
print(json.dumps({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                  "peak_rss_bytes": rss, "peak_heap_bytes": heap}))
"""


BENCH = BENCH.replace("PEAK_RSS", PEAK_RSS)


def bench_standalone(path: Path, samples: int = BENCH_SAMPLES) -> dict:
    """Sample `samples` times from the file in a fresh `python -I`; tokens/s and memory."""
    cmd = [sys.executable, "-I", "-c", BENCH, str(path), str(samples)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the exported file failed its benchmark:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the two formats -------------------------------------------------------------------------


def header(ckpt: ckpt_io.Checkpoint, report: Report, source: str) -> str:
    lines = [
        "A microgpt model in one file that needs only Python 3's standard library.",
        "",
        f"    python {Path(report.path).name} --num-samples 10 --temperature 0.5 --prompt ka"
        " --seed 1",
        "",
    ]
    return "\n".join(lines + model_lines(ckpt, report, source, 8)) + "\n"


def model_lines(ckpt: ckpt_io.Checkpoint, report: Report, source: str, width: int) -> list[str]:
    """A header's closing lines: the model's shape, where it came from, what was measured
    (labels padded to `width`)."""
    m = ckpt.model
    return [
        f"GPT n_layer={m.n_layer} n_embd={m.n_embd} n_head={m.n_head} block_size={m.block_size}"
        f" mlp={m.mlp} vocab={len(ckpt.uchars) + 1} (microgpt {__version__})",
        f"{'source':<{width}} {Path(source).name}, step {ckpt.step}, sha256 "
        f"{report.checkpoint_sha256}",
        *[f"{label:<{width}} {value}" for label, value in report.rows()],
    ]


def export_py(
    ckpt: ckpt_io.Checkpoint, q: Quantized, report: Report, source: str, out: Path, measure: bool
) -> None:
    """Render, time the real file, then write it with the numbers in its header."""
    # NOTE: the header holds the file's own size, so render until the size stops changing
    # (the number's digits are the only thing that can move it; two rounds in practice).
    text = render(ckpt, q, header(ckpt, report, source))
    if measure:
        with tempfile.TemporaryDirectory() as tmp:
            trial = Path(tmp) / out.name
            trial.write_text(text, encoding="utf-8")
            stats = bench_standalone(trial)
        report.tokens_per_s = stats["tokens_per_s"]
        report.peak_rss_bytes = stats["peak_rss_bytes"]
        report.peak_heap_bytes = stats["peak_heap_bytes"]
        v = sys.version_info
        report.runtime = f"CPython {v.major}.{v.minor}, python -I, one core"
    for _ in range(10):
        blob = text.encode("utf-8")
        if report.file_bytes == len(blob):
            break
        report.file_bytes = len(blob)
        text = render(ckpt, q, header(ckpt, report, source))
    _write(out, text.encode("utf-8"))


def c_header(ckpt: ckpt_io.Checkpoint, report: Report, source: str) -> str:
    name, exe = Path(report.path).name, Path(report.path).stem
    lines = [
        "A microgpt model in one C99 file: its weights, the forward pass with a KV cache, and",
        "the sampler. It needs only the C standard library and libm; no malloc, no globals.",
        "",
        f"    cc -std=c99 -O2 -DMICROGPT_MAIN -o {exe} {name} -lm",
        f"    ./{exe} --num-samples 10 --temperature 0.5 --prompt ka --seed 1",
        "",
        "To embed it, compile it without MICROGPT_MAIN and call the API declared below (mg_init,",
        "mg_start, mg_next, ...). -DMICROGPT_DOUBLE=1 computes in double, bit for bit the",
        "reference engine on these weights (with --quantize none, a seed draws exactly the",
        "samples of `microgpt sample --seed`); 0 computes in float, as a Cortex-M4F's FPU does.",
        "",
    ]
    return "\n".join(lines + model_lines(ckpt, report, source, 9)) + "\n"


def measure_c(
    text: str,
    ckpt: ckpt_io.Checkpoint,
    report: Report,
    docs: list[str] | None,
    engine: str | None,
    data,
    tmp: Path,
) -> None:
    """Build the C file here and fill `report`: its loss and speed on this machine, and its
    costs on the emulated Cortex-M4F where the toolchain and QEMU are installed."""
    from . import c_export, mcu

    src = tmp / "source" / "model.c"
    src.parent.mkdir()
    src.write_text(text, encoding="utf-8")
    cc = c_export.find_cc()
    if cc is None:
        report.runtime = "no C compiler found: set CC, or install gcc or clang"
    else:
        exe = c_export.build(src, tmp / "model", cc)
        if docs is not None:
            report.data_path = str(data)
            report.loss_original, report.eval_tokens = engine_loss(ckpt, ckpt.params, docs, engine)
            report.loss_exported, _ = c_export.score(exe, ckpt, docs)
        samples = 100
        tokens, seconds = c_export.bench(exe, samples)
        if seconds < C_BENCH_SECONDS:  # long enough for the clock: ~C_BENCH_SECONDS
            samples = int(samples * C_BENCH_SECONDS / max(seconds, 1e-3)) + 1
            tokens, seconds = c_export.bench(exe, samples)
        report.tokens_per_s = tokens / max(seconds, 1e-9)
        report.runtime = f"{Path(cc).name} -O2, one core, CPU time of {samples:,} samples"
    missing = mcu.missing_tools()
    if missing:
        report.mcu_note = f"needs {', '.join(missing)}: {mcu.INSTALL}"
        return
    stats = mcu.measure(src, tmp)
    report.mcu_flash_bytes = stats.flash_bytes
    report.mcu_static_ram_bytes = stats.static_ram_bytes
    report.mcu_stack_bytes = stats.stack_bytes
    report.mcu_state_bytes = stats.state_bytes
    report.mcu_instructions_per_token = stats.instructions_per_token
    report.mcu_note = "Cortex-M4F, arm-none-eabi-gcc -O2, QEMU mps2-an386, libm included"


def export_c(
    ckpt: ckpt_io.Checkpoint,
    q: Quantized,
    report: Report,
    source: str,
    out: Path,
    measure: bool,
    docs: list[str] | None,
    engine: str | None,
    data,
) -> None:
    """Render, build and measure the real file, then write it (and its .h) with the numbers
    in its header."""
    from . import c_export

    report.compute = "float64" if q.mode == "none" else "float32"
    report.weight_bytes = c_export.weight_bytes(q)
    text = c_export.render(ckpt, q, c_header(ckpt, report, source))
    if measure:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                measure_c(text, ckpt, report, docs, engine, data, Path(tmp))
            except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                lines = str(e).strip().splitlines() or [type(e).__name__]
                why = next((ln for ln in lines if "error:" in ln), lines[0]).strip()
                raise ExportError(f"could not build or run the C file to measure it ({why}); "
                                  "pass --no-measure to write it unmeasured") from None  # fmt: skip
    for _ in range(10):  # the header holds the file's own size (see export_py)
        blob = text.encode("utf-8")
        if report.file_bytes == len(blob):
            break
        report.file_bytes = len(blob)
        text = c_export.render(ckpt, q, c_header(ckpt, report, source))
    _write(out, text.encode("utf-8"))
    if report.header_path:
        _write(Path(report.header_path), c_export.header_file(text, out.name).encode("utf-8"))


def export(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str = "py",
    quantize_mode: str = "none",
    data: str | os.PathLike | None = None,
    engine: str | None = None,
    force: bool = False,
    measure: bool = True,
    header: bool = False,
) -> Report:
    """Export `checkpoint` to `out`; measure it when `measure` (the loss only with `data`,
    split as the model was trained, computed by `engine`: default the fastest installed).
    `header` (C only) also writes the file's declarations beside it, as `out` with `.h`."""
    check_choice(fmt, quantize_mode)
    out_path = check_out(out, force)
    header_path = None
    if header:
        if fmt != "c":
            raise ExportError("--header goes with --format c (it writes the C file's .h)")
        header_path = check_out(out_path.with_suffix(".h"), force, "--header's file")
        if header_path == out_path:
            raise ExportError(f"--out {str(out)!r} ends in .h; name the C file, e.g. model.c")
    ckpt = ckpt_io.load(checkpoint)
    digest = sha256_bytes(Path(checkpoint).read_bytes())
    q = quantize(ckpt.params, quantize_mode)
    report = Report(
        fmt,
        quantize_mode,
        str(out_path),
        digest,
        weight_bytes=q.weight_bytes,
        num_values=q.num_values,
        header_path=None if header_path is None else str(header_path),
    )
    docs = eval_docs(ckpt, data) if (measure and data is not None) else None
    if fmt == "py":
        if docs is not None:
            report.data_path = str(data)
            report.loss_original, report.eval_tokens = engine_loss(ckpt, ckpt.params, docs, engine)
            report.loss_exported, _ = engine_loss(ckpt, q.dequantize(), docs, engine)
        export_py(ckpt, q, report, str(checkpoint), out_path, measure)
    elif fmt == "c":
        export_c(ckpt, q, report, str(checkpoint), out_path, measure, docs, engine, data)
    else:
        from . import onnx_export  # needs the optional `onnx` package

        if quantize_mode == "none":  # the graph computes in float32
            report.weight_bytes = 4 * q.num_values
        blob = onnx_export.build(ckpt, q).SerializeToString()
        report.file_bytes = len(blob)
        _write(out_path, blob)
        if measure:
            onnx_export.measure(out_path, ckpt, report, docs, engine, data)
    return report
