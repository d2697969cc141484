"""The C export on a microcontroller, without one: a Cortex-M4F build run under QEMU.

The board is QEMU's `mps2-an386` (a Cortex-M4 with FPU), the compiler Debian's
`gcc-arm-none-eabi` with newlib (`libnewlib-arm-none-eabi`), output over semihosting:

    apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm

`samples` runs the exported file's own `main` on the emulated core with a command line, as
the host runs it. `measure` reports what the model costs there: flash and static RAM from
`arm-none-eabi-size` (two bare firmwares that differ only in the model, so newlib's printf
and the demo's I/O are not counted), the peak stack of its calls (painted and scanned), and
instructions per token (QEMU's -icount: one instruction per virtual nanosecond, counted by
SysTick at 25 MHz). Standard library only; the startup code and linker script are in mcu/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .c_export import WARNINGS, header_file

HERE = Path(__file__).with_name("mcu")
CPU = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
INSTRUCTIONS_PER_TICK = 40  # 1 instruction per ns under -icount shift=0; SysTick at 25 MHz
MCU_HZ = 100e6  # the clock the tokens/s estimate assumes, one instruction per cycle
QEMU = ("-M", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native")
INSTALL = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


def missing_tools() -> list[str]:
    """The tools this needs that are not on PATH (empty: all there)."""
    return [t for t in TOOLS if shutil.which(t) is None]


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or (cmd[0].endswith("gcc") and proc.stderr.strip()):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def compile_object(source: Path, obj: Path, double: bool | None = None, *flags: str) -> Path:
    """One translation unit for the Cortex-M4F, warnings as errors. A float build must not
    compute in double by accident (the M4F's FPU is single precision): -Wdouble-promotion.
    Our board files (mcu/) are GNU C (inline assembly, a vector table); the model is C99."""
    warnings = WARNINGS if source.parent != HERE else ("-std=gnu99", "-Wall", "-Wextra", "-Werror")
    cmd = ["arm-none-eabi-gcc", *CPU, *warnings, "-O2", "-ffunction-sections", "-fdata-sections"]
    if double is not None:
        cmd.append(f"-DMICROGPT_DOUBLE={int(double)}")
    if double is False:
        cmd.append("-Wdouble-promotion")
    cmd += [*flags, "-I", str(source.parent), "-c", str(source), "-o", str(obj)]
    _run(cmd)
    return obj


def link(objects: list[Path], elf: Path, bare: bool = False) -> Path:
    """An ELF for mps2-an386: our startup and linker script, newlib with semihosting
    (rdimon) or, bare, without any I/O (nosys)."""
    startup = compile_object(
        HERE / "startup.c", elf.with_suffix(".startup.o"), None, *(["-DMG_BARE"] if bare else [])
    )
    specs = "--specs=nosys.specs" if bare else "--specs=rdimon.specs"
    cmd = ["arm-none-eabi-gcc", *CPU, specs, "-nostartfiles", "-T", str(HERE / "mps2_an386.ld")]
    cmd += ["-Wl,--gc-sections", *map(str, [startup, *objects]), "-lm", "-o", str(elf)]
    _run(cmd)
    return elf


def qemu(elf: Path, args: list[str], icount: bool = False, timeout: float = 600) -> str:
    """Run `elf` on the emulated board with `args` as its command line (QEMU gives the
    program its file name as argv[0], then these); its stdout."""
    cmd = ["qemu-system-arm", *QEMU, *(["-icount", "shift=0"] if icount else [])]
    cmd += ["-kernel", str(elf), "-append", " ".join(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{elf.name} {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def build_main(source: Path, workdir: Path, double: bool | None = None) -> Path:
    """The exported file with its own main (MICROGPT_MAIN), for the emulated board."""
    obj = compile_object(source, workdir / "main.o", double, "-DMICROGPT_MAIN")
    return link([obj], workdir / "model.elf")


def samples(elf: Path, *args: str) -> str:
    """What the exported file's main prints on the emulated Cortex-M4 (a space-free
    command line: QEMU's -append is split at spaces)."""
    return qemu(elf, list(args))


def arm_size(path: Path) -> dict[str, int]:
    """text (code and const data), data, bss of an ELF or object, from arm-none-eabi-size."""
    line = _run(["arm-none-eabi-size", str(path)]).stdout.splitlines()[1].split()
    return {"text": int(line[0]), "data": int(line[1]), "bss": int(line[2])}


@dataclass
class McuStats:
    """What the model costs on the Cortex-M4F (bytes, instructions)."""

    flash_bytes: int  # code + const data (weights) + .data's initial values, libm included
    static_ram_bytes: int  # .data + .bss the model adds: its mg_model state, libm's
    stack_bytes: int  # peak stack below the caller while sampling
    state_bytes: int  # sizeof(mg_model): the KV cache, logits, random state
    object_bytes: dict  # model.o alone: text, data, bss
    instructions: int  # while sampling `samples` samples
    positions: int  # forward passes those samples took (one per token)
    samples_text: str  # the samples it printed (the host prints the same)

    @property
    def ram_bytes(self) -> int:
        return self.static_ram_bytes + self.stack_bytes

    @property
    def instructions_per_token(self) -> float:
        return self.instructions / self.positions

    @property
    def tokens_per_s_estimate(self) -> float:
        """At MCU_HZ, one instruction per cycle: an estimate (real cores stall on loads,
        branches and multi-cycle FPU operations)."""
        return MCU_HZ / self.instructions_per_token


MCU_LINE = re.compile(r"mcu state (\d+) stack (\d+) ticks (\d+) positions (\d+)")


def measure(
    source: Path, workdir: Path, num_samples: int = 20, seed: int = 42, double: bool | None = None
) -> McuStats:
    """Build the exported file `source` for the Cortex-M4F in `workdir` (as model.c, beside
    its model.h) and measure it; see the module's docstring for how."""
    text = source.read_text(encoding="utf-8")
    source = workdir / "model.c"
    source.write_text(text, encoding="utf-8")
    (workdir / "model.h").write_text(header_file(text, "model.c"), encoding="utf-8")
    model_o = compile_object(source, workdir / "model.o", double)
    sizes = {}
    for use in (0, 1):
        obj = compile_object(HERE / "size_main.c", workdir / f"size{use}.o", double,
                             f"-DMG_USE_MODEL={use}", "-I", str(source.parent))  # fmt: skip
        objects = [obj, model_o] if use else [obj]
        sizes[use] = arm_size(link(objects, workdir / f"size{use}.elf", bare=True))
    bench_o = compile_object(HERE / "bench.c", workdir / "bench.o", double,
                             "-I", str(source.parent))  # fmt: skip
    elf = link([bench_o, model_o], workdir / "bench.elf")
    out = qemu(elf, [str(num_samples), str(seed)], icount=True)
    match = MCU_LINE.search(out)
    if match is None:
        raise RuntimeError(f"the MCU benchmark printed something unexpected:\n{out}")
    state, stack, ticks, positions = map(int, match.groups())
    grown = {k: sizes[1][k] - sizes[0][k] for k in ("text", "data", "bss")}
    return McuStats(
        flash_bytes=grown["text"] + grown["data"],
        static_ram_bytes=grown["data"] + grown["bss"],
        stack_bytes=stack,
        state_bytes=state,
        object_bytes=arm_size(model_o),
        instructions=ticks * INSTRUCTIONS_PER_TICK,
        positions=positions,
        samples_text=out[: match.start()],
    )
