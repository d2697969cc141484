"""One rank of a DDP test job; tests/test_torch_ddp.py starts two under torchrun.

    python -m torch.distributed.run --nproc_per_node=2 --master_addr=127.0.0.1 \\
        --master_port=PORT tests/ddp_worker.py MODE OUT_DIR

Every rank writes what it holds to OUT_DIR/<mode>_rank<r>.json (floats as repr, exact), so
the test can compare ranks with each other and with a single process. Modes:
  train   first the loss and the DDP-averaged gradients of one forward_backward on the
          first global batch; then a fresh run of num_steps steps, in which rank 0 saves a
          checkpoint after STOP steps (the point where a run would be interrupted); the
          losses and the final weights
  resume  a new job: every rank loads that checkpoint and trains on to num_steps
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.tokenizer import Tokenizer
from microgpt.torch_engine import TorchEngine
from microgpt.train import Trainer, new_trainer

MODEL = ModelConfig(n_layer=1, n_embd=8, n_head=2, block_size=8)
OPTIM = OptimConfig()
TRAIN = TrainConfig(num_steps=50, batch_size=5, seed=7)  # 5 over 2 ranks: shards of 3 and 2
STOP = 20


def documents(seed: int) -> list[str]:
    """Name-like documents of varied length (so shards hold different token counts)."""
    gen = random.Random(1234)
    docs = ["".join(gen.choice("abcdefghij") for _ in range(gen.randint(1, 12))) for _ in range(60)]
    random.Random(seed).shuffle(docs)
    return docs


def fresh() -> Trainer:
    rng = random.Random(TRAIN.seed)
    return new_trainer(
        TorchEngine,
        documents(TRAIN.seed),
        MODEL,
        OPTIM,
        TRAIN,
        rng,
        engine_kwargs={"device": "cpu"},
    )


def resumed(path: Path) -> Trainer:
    ckpt = ckpt_io.load(path)
    tokenizer = ckpt.tokenizer
    engine = TorchEngine(ckpt.model, ckpt.optim, tokenizer.vocab_size, ckpt.params, device="cpu")
    engine.load_optimizer_state(ckpt.adam_m, ckpt.adam_v)
    docs = documents(ckpt.train.seed)
    assert Tokenizer.from_docs(docs).uchars == tokenizer.uchars
    return Trainer(engine, tokenizer, docs, ckpt.optim, ckpt.train, ckpt.rng(), step=ckpt.step)


def flat(tensors) -> dict[str, list[float]]:
    return {k: list(t.data) for k, t in tensors.items()}


def main(mode: str, out: Path) -> None:
    result: dict = {}
    if mode == "train":
        probe = fresh().engine
        result["loss"] = probe.forward_backward(fresh().batch(0))
        result["grads"] = flat(probe.gradients())
        result["probe_stats"] = dict(probe.stats)
        trainer = fresh()
    else:
        trainer = resumed(out / "checkpoint.safetensors")
    engine = trainer.engine
    result["world_size"] = engine.launch.world_size
    result["losses"] = []
    while not trainer.done:
        result["losses"].append(trainer.step().loss)
        if mode == "train" and trainer.step_count == STOP and engine.launch.is_main:
            ckpt_io.save(out / "checkpoint.safetensors", trainer.checkpoint())
    result["params"] = flat(engine.parameters())
    result["stats"] = dict(engine.stats)
    (out / f"{mode}_rank{engine.launch.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
