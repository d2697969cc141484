"""Bad input everywhere: every case ends with exit status 2, exactly one line on stderr
("microgpt: error: ..." naming the problem), no traceback, and no existing file changed.

Each case runs the command's `main` in this process (an exception, a traceback in the real
command, fails the test); a few cases also run the real command in a fresh interpreter, to
show the two agree. The workspace (data files, a finished run, broken checkpoints) is built
once; a snapshot of every file's bytes and mode before and after each case is the oracle
for "nothing was lost or overwritten".
"""

from __future__ import annotations

import os

import pytest
from run_helpers import ENGINE_NAMES, TINY, cli, main_cli, require_engine, snapshot

from microgpt import checkpoint as ckpt_io

NAMES = "emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\nharper\nevelyn\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace: good and bad data files, a finished run, broken checkpoints."""
    root = tmp_path_factory.mktemp("ws")
    env = dict(os.environ, MICROGPT_CACHE_DIR=str(root / "cache"), PYTHONHASHSEED="0")
    (root / "good.txt").write_text(NAMES)
    (root / "other.txt").write_text(NAMES.replace("emma", "anna"))  # same letters, other bytes
    (root / "accents.txt").write_text(NAMES + "zoë\nJOSÉ\n")
    (root / "two.txt").write_text("ab\ncd\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_text("  \n\n\t \n")
    (root / "latin1.txt").write_bytes("café\nnaïve\n".encode("latin-1"))
    (root / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (root / "adir").mkdir()
    (root / "emptydir").mkdir()
    (root / "afile").write_text("not a directory\n")
    run = root / "run"
    r = main_cli(
        [
            "train",
            "--data",
            str(root / "good.txt"),
            "--steps",
            "4",
            "--num-samples",
            "1",
            *TINY,
            "--out",
            str(run),
            "--checkpoint-every",
            "2",
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    good = (run / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (root / "garbage.safetensors").write_bytes(b"PK\x03\x04 this is a zip file, not a checkpoint")
    ckpt = ckpt_io.load(run / "model.safetensors")
    ckpt.params["wte"].data[3] = float("nan")
    (root / "nan.safetensors").write_bytes(ckpt_io.encode(ckpt))
    broken_run = root / "broken_run"
    broken_run.mkdir()
    (broken_run / "model.safetensors").write_bytes(good[:100])
    return root, env


def T(*args):  # a `train` command on the tiny model, one step
    return ["train", "--steps", "1", "--num-samples", "1", *TINY, *args]


# (id, argv with {ws} for the workspace, a phrase the one-line message must contain)
CASES = [
    # data files
    ("data-missing", T("--data", "{ws}/nope.txt"), "does not exist"),
    ("data-directory", T("--data", "{ws}/adir"), "is a directory"),
    ("data-empty", T("--data", "{ws}/empty.txt"), "holds no documents"),
    ("data-whitespace-only", T("--data", "{ws}/blank.txt"), "holds no documents"),
    ("data-not-utf8", T("--data", "{ws}/latin1.txt"), "not valid UTF-8"),
    ("data-binary", T("--data", "{ws}/binary.bin"), "looks binary"),
    ("data-all-held-out", T("--data", "{ws}/two.txt", "--val-fraction", "0.9"), "holds out all"),
    # run directory
    ("out-is-a-file", T("--data", "{ws}/good.txt", "--out", "{ws}/afile"), "not a directory"),
    ("out-holds-a-run", T("--data", "{ws}/good.txt", "--out", "{ws}/run"), "--force"),
    # impossible configs
    (
        "embd-not-divisible",
        T("--data", "{ws}/good.txt", "--n-embd", "10", "--n-head", "4"),
        "divisible",
    ),
    ("embd-zero", T("--data", "{ws}/good.txt", "--n-embd", "0"), "n_embd must be a positive"),
    ("head-negative", T("--data", "{ws}/good.txt", "--n-head", "-2"), "n_head must be a positive"),
    ("layer-zero", T("--data", "{ws}/good.txt", "--n-layer", "0"), "n_layer must be a positive"),
    ("block-size-zero", T("--data", "{ws}/good.txt", "--block-size", "0"), "block_size"),
    ("steps-negative", T("--data", "{ws}/good.txt", "--steps", "-3"), "steps must be"),
    ("batch-size-zero", T("--data", "{ws}/good.txt", "--batch-size", "0"), "batch size"),
    ("temperature-negative", T("--data", "{ws}/good.txt", "--temperature", "-0.5"), "temperature"),
    ("lr-nan", T("--data", "{ws}/good.txt", "--learning-rate", "nan"), "learning rate"),
    ("lr-inf", T("--data", "{ws}/good.txt", "--learning-rate", "inf"), "learning rate"),
    ("lr-zero", T("--data", "{ws}/good.txt", "--learning-rate", "0"), "learning rate"),
    (
        "val-fraction-above-one",
        T("--data", "{ws}/good.txt", "--val-fraction", "1.5"),
        "val fraction",
    ),
    ("eval-every-without-val", T("--data", "{ws}/good.txt", "--eval-every", "5"), "--val-fraction"),
    (
        "eval-every-negative",
        T("--data", "{ws}/good.txt", "--val-fraction", "0.2", "--eval-every", "-1"),
        "--eval-every must be",
    ),
    (
        "checkpoint-every-without-out",
        T("--data", "{ws}/good.txt", "--checkpoint-every", "2"),
        "needs --out",
    ),
    # the command line itself
    ("steps-not-a-number", T("--data", "{ws}/good.txt", "--steps", "abc"), "invalid int"),
    ("unknown-flag", T("--data", "{ws}/good.txt", "--lr", "0.1"), "unrecognized"),
    ("unknown-doc-mode", T("--data", "{ws}/good.txt", "--doc-mode", "chapters"), "chapters"),
    ("unknown-engine", T("--data", "{ws}/good.txt", "--engine", "tpu"), "invalid choice"),
    ("no-command", [], "required"),
    (
        "allow-data-change-without-resume",
        T("--data", "{ws}/good.txt", "--allow-data-change"),
        "--resume",
    ),
    # resume
    ("resume-missing-dir", ["train", "--resume", "{ws}/nope"], "no such run"),
    ("resume-dir-without-checkpoint", ["train", "--resume", "{ws}/emptydir"], "nothing to resume"),
    ("resume-broken-checkpoint", ["train", "--resume", "{ws}/broken_run"], "truncated"),
    (
        "resume-changed-data",
        ["train", "--resume", "{ws}/run", "--data", "{ws}/other.txt"],
        "--allow-data-change",
    ),
    (
        "resume-new-characters",
        ["train", "--resume", "{ws}/run", "--data", "{ws}/accents.txt", "--allow-data-change"],
        "'J', 'O', 'S', 'z', 'É', 'ë'",
    ),
    (
        "resume-changed-shape",
        ["train", "--resume", "{ws}/run", "--n-embd", "32"],
        "--n-embd cannot change",
    ),
    ("resume-seed-zero", ["train", "--resume", "{ws}/run", "--seed", "0"], "--seed cannot change"),
    ("resume-fewer-steps", ["train", "--resume", "{ws}/run", "--steps", "2"], "fewer than"),
    # a diverging run stops, keeps its last good checkpoint, says what to try
    (
        "loss-becomes-nan",
        [
            "train",
            "--data",
            "{ws}/good.txt",
            "--steps",
            "6",
            *TINY,
            "--learning-rate",
            "1e300",
            "--out",
            "{ws}/nan_run",
        ],
        "lower --learning-rate",
    ),
    # sample
    (
        "sample-missing-checkpoint",
        ["sample", "--checkpoint", "{ws}/nope.safetensors"],
        "no such checkpoint",
    ),
    ("sample-checkpoint-directory", ["sample", "--checkpoint", "{ws}/adir"], "is a directory"),
    (
        "sample-truncated-checkpoint",
        ["sample", "--checkpoint", "{ws}/truncated.safetensors"],
        "truncated",
    ),
    (
        "sample-garbage-checkpoint",
        ["sample", "--checkpoint", "{ws}/garbage.safetensors"],
        "not a checkpoint",
    ),
    ("sample-nan-weights", ["sample", "--checkpoint", "{ws}/nan.safetensors"], "NaN"),
    (
        "sample-negative-temperature",
        ["sample", "--checkpoint", "{ws}/run/model.safetensors", "--temperature", "-1"],
        "temperature",
    ),
    (
        "sample-negative-count",
        ["sample", "--checkpoint", "{ws}/run/model.safetensors", "--num-samples", "-4"],
        "num-samples",
    ),
    ("sample-no-checkpoint-flag", ["sample"], "--checkpoint"),
    (
        "sample-seed-not-a-number",
        ["sample", "--checkpoint", "{ws}/run/model.safetensors", "--seed", "x"],
        "invalid int",
    ),
]


def test_at_least_25_cases():
    assert len(CASES) >= 25


def check_bad_input(ws, argv, phrase, run) -> None:
    root, env = ws
    argv = [a.replace("{ws}", str(root)) for a in argv]
    before = snapshot(root)
    r = run(argv, env)
    after = snapshot(root)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stderr.endswith("\n"), r.stderr
    assert lines[0].startswith("microgpt: error: "), lines[0]
    assert phrase in lines[0], lines[0]
    for path, content in before.items():
        assert after.get(path) == content, f"{path} changed or vanished"


@pytest.mark.parametrize("argv, phrase", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(ws, argv, phrase):
    check_bad_input(ws, argv, phrase, main_cli)


# one case of each kind (usage, data, run directory, checkpoint) in the real command
IN_A_PROCESS = ["batch-size-zero", "data-missing", "out-holds-a-run", "resume-broken-checkpoint",
                "unknown-flag"]


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_fresh_interpreter(ws, name):
    (argv, phrase), = [c[1:] for c in CASES if c[0] == name]
    check_bad_input(ws, argv, phrase, cli)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_data_file(ws):
    root, env = ws
    path = root / "secret.txt"
    path.write_text(NAMES)
    path.chmod(0)
    try:
        r = main_cli(T("--data", str(path)), env)
    finally:
        path.chmod(0o644)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "cannot read" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_nan_run_keeps_its_last_good_checkpoint(ws, engine):
    """The diverging run above, with a checkpoint every step: the file on disk is the last
    finite state, and it loads (the loader refuses NaN, so loading is the check)."""
    root, env = ws
    out = root / f"nan_ckpt_{require_engine(engine)}"
    r = main_cli(
        [
            "train",
            "--engine",
            engine,
            "--data",
            str(root / "good.txt"),
            "--steps",
            "6",
            *TINY,
            "--quiet",
            "--learning-rate",
            "1e300",
            "--out",
            str(out),
            "--checkpoint-every",
            "1",
        ],
        env,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    steps = [line for line in r.stdout.splitlines() if line.startswith("step")]
    saved = ckpt_io.load(out / "model.safetensors")
    # the last step whose weights and Adam moments were all finite (loaded: so they are)
    assert 1 <= saved.step <= len(steps)
    assert f"(step {saved.step}), is kept" in r.stderr
