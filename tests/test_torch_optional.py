"""What works without torch: the install hint, torchrun's environment, the CLI's rank guards.

None of these tests import torch; the first one hides it even where it is installed.
"""

from __future__ import annotations

import sys

import pytest

from microgpt import distributed
from microgpt.__main__ import main
from microgpt.config import ConfigError
from microgpt.engine import EngineError, load_engine


@pytest.fixture
def no_torch(monkeypatch):
    """An interpreter where `import torch` fails, as on an installation without the extra."""
    monkeypatch.setitem(sys.modules, "torch", None)  # None in sys.modules: ImportError on import
    for name in list(sys.modules):
        if name.startswith("microgpt.torch_engine"):
            monkeypatch.delitem(sys.modules, name)


def test_torch_engine_without_torch_says_how_to_install(no_torch):
    with pytest.raises(EngineError) as e:
        load_engine("torch")
    assert str(e.value) == (
        "the torch engine needs the 'torch' package; install it with: "
        "pip install 'microgpt-lab[torch]'"
    )


def test_cli_without_torch_is_one_line(no_torch, tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("ann\nbob\n")
    assert main(["train", "--engine", "torch", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "microgpt: error: the torch engine needs the 'torch' package; "
        "install it with: pip install 'microgpt-lab[torch]'\n"
    )


def test_launch_from_torchrun_environment():
    assert distributed.from_env({}) == distributed.Launch(0, 1, 0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    launch = distributed.from_env(env)
    assert (launch.rank, launch.world_size, launch.local_rank) == (3, 4, 1)
    assert launch.distributed and not launch.is_main
    with pytest.raises(ConfigError):
        distributed.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError):
        distributed.from_env({"WORLD_SIZE": "two"})


def test_shards_partition_the_global_batch():
    batch = list(range(7))
    shards = [distributed.shard(batch, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for s in shards for x in s) == batch
    assert "effective batch 7 sequences" in distributed.describe(distributed.Launch(0, 3), 7)
    assert "(3/2/2)" in distributed.describe(distributed.Launch(0, 3), 7)
    with pytest.raises(ConfigError, match="--batch-size 2 is smaller than the 3 processes"):
        distributed.check_batch(distributed.Launch(0, 3), 2)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--engine", "ref"],
            "torchrun started 2 processes; distributed training needs --engine torch",
        ),
        (["--engine", "torch"], "--batch-size 1 is smaller than the 2 processes"),
    ],
)
def test_cli_under_torchrun_refuses_what_cannot_work(monkeypatch, tmp_path, capsys, flags, message):
    # torchrun's environment, without torchrun: both mistakes are caught before any process
    # group is joined, so nothing waits for the other rank.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    data = tmp_path / "d.txt"
    data.write_text("ann\nbob\n")
    assert main(["train", *flags, "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("microgpt: error: ") and message in err and err.count("\n") == 1
