"""The C engine as a process: killed and resumed, interrupted by a real signal while it trains
several steps per call, and its C run under AddressSanitizer and UndefinedBehaviorSanitizer.

The oracle of the first two is the uninterrupted run of the same command (every weight and
Adam moment `==`, the same metrics.jsonl); of the third, the C engine's own tests.
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest
from run_helpers import assert_same_state, cli, popen, require_engine

from microgpt import checkpoint as ckpt_io

require_engine("c")

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "src" / "microgpt" / "c_engine" / "csrc"
NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "harper",
         "evelyn", "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila"]


@pytest.fixture
def names(tmp_path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES * 4) + "\n")
    return path


def train_args(data, out, steps, *extra) -> list[str]:
    return ["train", "--engine", "c", "--data", str(data), "--steps", str(steps),
            "--num-samples", "3", "--out", str(out), "--quiet", *extra]  # fmt: skip


# `microgpt ARGS` that kills itself (SIGKILL) as soon as a step call (one step, or a chunk of
# several in one C call) has trained past step AT: before that call's hooks ran.
KILL_AFTER = textwrap.dedent(
    """
    import os, signal, sys
    from microgpt import train
    from microgpt.__main__ import main
    at = int(sys.argv[1])
    def killing(original):
        def call(self, *args):
            result = original(self, *args)
            if self.step_count >= at:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return call
    train.Trainer.step = killing(train.Trainer.step)
    train.Trainer.steps = killing(train.Trainer.steps)
    sys.exit(main(sys.argv[2:]))
    """
)


def test_sigkill_then_resume_is_bit_identical(names, tmp_path, cli_env):
    straight = tmp_path / "straight"
    r = cli(train_args(names, straight, 40, "--checkpoint-every", "8"), cli_env)
    assert r.returncode == 0, r.stderr
    killed = tmp_path / "killed"
    args = train_args(names, killed, 40, "--checkpoint-every", "8")
    r = subprocess.run([sys.executable, "-c", KILL_AFTER, "21", *args], env=cli_env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr
    # chunks never pass a checkpoint: the kill inside steps 17..24 leaves step 16's
    assert ckpt_io.load(killed / "model.safetensors").step == 16
    resumed = cli(["train", "--resume", str(killed)], cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(ckpt_io.load(straight / "model.safetensors"),
                      ckpt_io.load(killed / "model.safetensors"))  # fmt: skip
    assert (killed / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()
    assert resumed.stdout.splitlines()[-3:] == r_samples(straight, cli_env)


def r_samples(out, env) -> list[str]:
    r = cli(["sample", "--checkpoint", str(out / "model.safetensors"), "--engine", "c"], env)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


@pytest.mark.slow  # two whole runs of 30,000 steps
def test_sigint_stops_a_chunked_run_at_a_step_and_resumes_bit_identically(
    names, tmp_path, cli_env, record_property
):
    """A real SIGINT from another process, while the engine trains chunks of steps per call:
    the run stops at a step boundary (all of its step lines printed, that step's checkpoint
    written), quickly (the time from the signal to the exit is reported, not asserted), and
    its resumed run ends `==` the uninterrupted one."""
    steps = 30000
    straight = tmp_path / "straight"
    r = cli(train_args(names, straight, steps), cli_env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "interrupted"
    proc = popen(train_args(names, out, steps), cli_env)
    for line in proc.stdout:  # well into the run: the chunks are at their full length
        if line.startswith("step 3000 /"):
            break
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    latency = time.perf_counter() - sent
    record_property("sigint_to_exit_seconds", latency)
    print(f"\nSIGINT to exit (checkpoint written): {latency * 1000:.0f} ms")
    assert proc.returncode == 128 + signal.SIGINT, err
    assert err.count("\n") == 1 and "interrupted by SIGINT at step" in err, err
    stopped = ckpt_io.load(out / "model.safetensors").step
    assert 3000 <= stopped < steps
    assert f"at step {stopped} of {steps}" in err
    last_line = [line for line in rest.splitlines() if line.startswith("step")][-1]
    assert last_line.startswith(f"step {stopped:4d} /")  # every step's line, up to it
    resumed = cli(["train", "--resume", str(out)], cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(ckpt_io.load(straight / "model.safetensors"),
                      ckpt_io.load(out / "model.safetensors"))  # fmt: skip
    assert (out / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()


# --- sanitizers ------------------------------------------------------------------------------


def build_flags() -> list[str]:
    """The compiler flags setup.py builds the extensions with (its FLAGS list)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["FLAGS"]:
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no FLAGS list")


def sanitizer_runtime() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the sanitizer build needs it")
    path = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True,
                          text=True).stdout.strip()  # fmt: skip
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip("gcc has no AddressSanitizer runtime (libasan) here")
    return path


@pytest.mark.slow  # builds the extensions again (about 30 s with the tests)
def test_c_parity_tests_pass_under_asan_and_ubsan(tmp_path):
    """The C engine's tests again, on extensions built with -fsanitize=address,undefined
    (any finding aborts: ASan always, UBSan through -fno-sanitize-recover)."""
    libasan = sanitizer_runtime()
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "microgpt", src / "microgpt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))  # fmt: skip
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    flags = [*build_flags(), "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             f"-I{sysconfig.get_paths()['include']}"]  # fmt: skip
    for name, sources in (("_core64", ["microgpt.c", "module.c"]), ("_core32", ["float32.c"])):
        target = src / "microgpt" / "c_engine" / f"{name}{suffix}"
        build = subprocess.run(["gcc", *flags, *(str(CSRC / s) for s in sources), "-o",
                                str(target), "-lm"], capture_output=True, text=True)  # fmt: skip
        assert build.returncode == 0, build.stderr
    # NOTE: PYTHONMALLOC=malloc: Python's own allocator (pymalloc) hands out pieces of big
    # arenas, whose overruns ASan cannot see; through malloc every buffer gets red zones
    env = {**os.environ, "PYTHONPATH": str(src), "LD_PRELOAD": libasan,
           "PYTHONMALLOC": "malloc", "ASAN_OPTIONS": "detect_leaks=0",
           "UBSAN_OPTIONS": "print_stacktrace=1"}  # fmt: skip
    where = subprocess.run(
        [sys.executable, "-c", "import microgpt.c_engine._core64 as m; print(m.__file__)"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(src)), where.stderr  # the sanitized build
    tests = [str(ROOT / "tests" / t) for t in ("test_c_engine.py", "test_c_engine_kernels.py")]
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
               "not slow", "-k", "not compiled_part", *tests]  # fmt: skip
    r = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path,
                       timeout=900)  # fmt: skip
    report = r.stdout[-3000:] + r.stderr[-3000:]
    assert r.returncode == 0, report
    assert "AddressSanitizer" not in report and "runtime error" not in report, report
