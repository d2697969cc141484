"""`microgpt export`: the command line of the export package. Standard library only; the
`onnx` package is imported only when --format onnx is chosen."""

from __future__ import annotations

import sys
from pathlib import Path

from ..data import sha256_bytes
from ..engine import ENGINES
from ..flags import UsageError
from . import FORMATS
from .quantize import QUANTIZATIONS, ExportError


def add_export_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as one dependency-free Python file, an ONNX graph, or one C file",
        description="Export a checkpoint for the edge: `--format py` writes one Python file that "
        "needs only the standard library; `--format onnx` writes an ONNX graph (needs the "
        "`onnx` package); `--format c` writes one C99 file (weights, forward pass, sampler, "
        "a main behind MICROGPT_MAIN) for a PC or a microcontroller. The export is measured as "
        "it is written (bytes, loss, speed, memory; for C also flash, RAM and instructions per "
        "token on an emulated Cortex-M4F when arm-none-eabi-gcc and qemu-system-arm are there).",
    )
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a model.safetensors file")
    p.add_argument(
        "--format",
        default="py",
        metavar="FMT",
        help=f"output format: {', '.join(FORMATS)} (default: py)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument(
        "--quantize",
        default="none",
        metavar="Q",
        help=f"weight storage: {', '.join(QUANTIZATIONS)} (default: none, float64); "
        "the integer modes are per-row symmetric. The C file computes in double for none, "
        "in float otherwise",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="text file to measure the mean loss per token on (default: the "
        "checkpoint's training data when it is still there, unchanged)",
    )
    p.add_argument(
        "--engine",
        choices=list(ENGINES),
        help="engine that computes the original's loss, and the py export's (default: the "
        "fastest installed)",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="write the file without measuring loss, speed or memory",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="print what was measured (bytes, loss, tokens/s, peak memory) to stdout",
    )
    p.add_argument(
        "--header",
        action="store_true",
        help="--format c: also write the file's declarations (sizes, state struct, API) as a "
        ".h beside it, for embedding",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it already exists")
    p.set_defaults(func=cmd_export)


def training_data(checkpoint: str) -> str | None:
    """The checkpoint's training data file, if it is still where it was and unchanged."""
    from ..checkpoint import CheckpointError, read_safetensors

    try:
        metadata, _ = read_safetensors(checkpoint)
    except CheckpointError:
        return None  # export() reports the bad checkpoint properly
    path, digest = metadata.get("data_path"), metadata.get("data_sha256")
    if not path or not Path(path).is_file():
        return None
    try:
        return path if sha256_bytes(Path(path).read_bytes()) == digest else None
    except OSError:
        return None


def cmd_export(args) -> int:
    from . import export

    data = args.data
    if data is None and not args.no_measure:
        data = training_data(args.checkpoint)
    try:
        report = export(
            args.checkpoint,
            args.out,
            fmt=args.format,
            quantize_mode=args.quantize,
            data=data,
            engine=args.engine,
            force=args.force,
            measure=not args.no_measure,
            header=args.header,
        )
    except ExportError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {report.path} ({report.file_bytes:,} bytes)", file=sys.stderr)
    if report.header_path:
        print(f"wrote {report.header_path}", file=sys.stderr)
    if args.report:
        print(report.table())
    return 0
