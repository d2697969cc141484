"""Edge export to C on a microcontroller, without one: the exported file cross-compiled for a
Cortex-M4F (arm-none-eabi-gcc, newlib) and run under QEMU (mps2-an386, semihosting).

Oracles: the host build of the same file (the same samples), the layout of the model's state
struct worked by hand, and the default names model's goals (flash <= 16 KB, RAM <= 8 KB).
Skipped, with the reason, where the toolchain or QEMU is missing (.ci/run installs them).
"""

from __future__ import annotations

import pytest
from test_export_c import Built, need_cc, small_ckpt  # noqa: F401  (a fixture)

from microgpt import checkpoint as ckpt_io
from microgpt.export import c_export, export, mcu
from microgpt.export.quantize import quantize

pytestmark = pytest.mark.skipif(
    bool(mcu.missing_tools()),
    reason=f"needs {', '.join(mcu.missing_tools())} ({mcu.INSTALL})",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return Built(tmp_path_factory.mktemp("c"))


@pytest.mark.parametrize(
    "mode, args",
    [
        ("int8", ["--num-samples", "10", "--seed", "1", "--temperature", "0.5", "--prompt", "ka"]),
        ("int4", ["--num-samples", "6", "--seed", "3", "--top-k", "4", "--max-new-tokens", "30"]),
        ("none", ["--num-samples", "6", "--seed", "123456789012345678901", "--temperature", "1"]),
    ],
)
def test_cortex_m4_prints_the_hosts_samples(built, small_ckpt, mode, args, tmp_path):  # noqa: F811
    need_cc()
    src = built.source(small_ckpt, mode)
    elf = mcu.build_main(src, tmp_path)
    host = c_export.run(built.exe(small_ckpt, mode, mode == "none"), *args)
    assert mcu.samples(elf, *args) == host and len(host.splitlines()) == int(args[1])


def test_cortex_m4_rejects_bad_arguments(built, small_ckpt, tmp_path):  # noqa: F811
    elf = mcu.build_main(built.source(small_ckpt, "int8"), tmp_path)
    with pytest.raises(RuntimeError, match="exited 2: .*error: --temperature takes a finite"):
        mcu.samples(elf, "--temperature", "-3")


def state_bytes(n_layer, block_size, n_embd, vocab, real=4, long=4) -> int:
    """sizeof(mg_model) on a 32-bit Arm: k and v caches, logits, tokens, n, pending,
    positions, MT19937's 624 words and its index."""
    kv = 2 * n_layer * block_size * n_embd * real
    return kv + vocab * real + 4 * block_size + 4 + 4 + long + 4 * 624 + 4


@pytest.mark.parametrize("mode", ["int8", "none"])
def test_measure_on_the_emulated_core(built, small_ckpt, mode, tmp_path):  # noqa: F811
    need_cc()
    stats = mcu.measure(built.source(small_ckpt, mode), tmp_path, num_samples=8, seed=5)
    host = c_export.run(built.exe(small_ckpt, mode, mode == "none"), "--num-samples", "8",
                        "--seed", "5")  # fmt: skip
    assert stats.samples_text == host  # the benchmark draws what the host draws
    real = 8 if mode == "none" else 4
    assert stats.state_bytes == state_bytes(1, 16, 16, 27, real)
    assert stats.static_ram_bytes >= stats.state_bytes and 100 < stats.stack_bytes < 16384
    # no mutable globals: .data holds only the double build's two volatile const exponents
    assert stats.object_bytes["bss"] == 0 and stats.object_bytes["data"] == (16 if real == 8 else 0)
    weights = c_export.weight_bytes(quantize(ckpt_io.load(small_ckpt).params, mode))
    assert stats.flash_bytes > stats.object_bytes["text"] > weights
    # one forward pass per token fed: BOS, then each drawn token but a last one at the limit
    assert stats.positions == sum(min(len(ln) - 11 + 1, 16) for ln in host.splitlines())
    if mode == "int8":  # the goals, for this model's shape
        assert stats.flash_bytes <= 16384 and stats.ram_bytes <= 8192
        assert 1000 < stats.instructions_per_token < 100_000


def test_export_report_has_the_mcu_rows(small_ckpt, tmp_path):  # noqa: F811
    need_cc()
    report = export(small_ckpt, tmp_path / "m.c", fmt="c", quantize_mode="int4")
    rows = dict(report.rows())
    assert rows["mcu"].startswith(f"flash {report.mcu_flash_bytes:,} bytes, RAM ")
    assert "instructions per token" in rows["mcu speed"] and "estimate" in rows["mcu speed"]
    assert report.mcu_flash_bytes < 16384 and report.mcu_stack_bytes > 0
