"""The scalar autograd `Value` and the reference model against finite differences, and the
iterative topological sort against the original's recursive one."""

from __future__ import annotations

import math
import random

import pytest

from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.init import init_params
from microgpt.ref.autograd import Value, topological_order
from microgpt.ref.model import RefEngine, sequence_losses
from microgpt.tensor import Tensor
from microgpt.train import new_trainer


def topological_order_recursive(root: Value) -> list[Value]:
    """The original's recursive sort, verbatim: the oracle for `topological_order`."""
    topo = []
    visited = set()

    def build_topo(v):
        if v not in visited:
            visited.add(v)
            for child in v._children:
                build_topo(child)
            topo.append(v)

    build_topo(root)
    return topo


def test_every_node_names_its_operation():
    """`_op` (micrograd's label) says which operation made each node; leaves have none."""
    a, b = Value(2.0), Value(3.0)
    assert (a + b)._op == "+" and (a * b)._op == "*" and (a**2)._op == "**2"
    assert a.log()._op == "log" and a.exp()._op == "exp" and a.relu()._op == "relu"
    assert a._op == "" and (a - b)._op == "+" and (-a)._op == "*" and (a / b)._op == "*"
    assert (a / b)._children[1]._op == "**-1"


# f(a, b) built from Value ops, and the same function on floats (the oracle for the forward).
BINARY_OPS = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "radd": (lambda a, b: 2.5 + a, lambda a, b: 2.5 + a),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "rmul": (lambda a, b: 3.0 * a, lambda a, b: 3.0 * a),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "rsub": (lambda a, b: 1.5 - a, lambda a, b: 1.5 - a),
    "neg": (lambda a, b: -a, lambda a, b: -a),
    "truediv": (lambda a, b: a / b, lambda a, b: a / b),
    "rtruediv": (lambda a, b: 2.0 / a, lambda a, b: 2.0 / a),
    "pow": (lambda a, b: a**3, lambda a, b: a**3),
    "pow_neg_half": (lambda a, b: a**-0.5, lambda a, b: a**-0.5),
    "log": (lambda a, b: a.log(), lambda a, b: math.log(a)),
    "exp": (lambda a, b: a.exp(), lambda a, b: math.exp(a)),
    "relu_pos": (lambda a, b: a.relu(), lambda a, b: max(0.0, a)),
    "relu_neg": (lambda a, b: (-a).relu(), lambda a, b: max(0.0, -a)),
    "composite": (
        lambda a, b: (a * b + a.exp()).log() / (b**2 + 1),
        lambda a, b: math.log(a * b + math.exp(a)) / (b**2 + 1),
    ),
}


@pytest.mark.parametrize("name", sorted(BINARY_OPS))
def test_value_ops_match_finite_differences(name):
    vf, ff = BINARY_OPS[name]
    a0, b0, h = 1.3, 0.7, 1e-6
    a, b = Value(a0), Value(b0)
    out = vf(a, b)
    assert out.data == pytest.approx(ff(a0, b0), rel=1e-15)
    out.backward()
    da = (ff(a0 + h, b0) - ff(a0 - h, b0)) / (2 * h)
    db = (ff(a0, b0 + h) - ff(a0, b0 - h)) / (2 * h)
    assert a.grad == pytest.approx(da, rel=1e-7, abs=1e-9)
    assert b.grad == pytest.approx(db, rel=1e-7, abs=1e-9)


def random_graph(rng: random.Random, n_leaves: int, n_ops: int) -> Value:
    nodes = [Value(rng.uniform(0.5, 1.5)) for _ in range(n_leaves)]
    for _ in range(n_ops):
        a, b = rng.choice(nodes), rng.choice(nodes)  # reuse makes a DAG, not a tree
        op = rng.randrange(4)
        nodes.append(a + b if op == 0 else a * b if op == 1 else a.relu() if op == 2 else a - 1.0)
    out = nodes[-1]
    for node in rng.sample(nodes, min(5, len(nodes))):
        out = out + node
    return out


@pytest.mark.parametrize("seed", range(20))
def test_iterative_topological_order_equals_recursive(seed):
    rng = random.Random(seed)
    root = random_graph(rng, n_leaves=rng.randint(1, 6), n_ops=rng.randint(1, 200))
    iterative, recursive = topological_order(root), topological_order_recursive(root)
    assert len(iterative) == len(recursive)
    assert all(x is y for x, y in zip(iterative, recursive))


@pytest.mark.parametrize("mlp", ["relu", "relu2"])
def test_model_gradients_match_finite_differences(mlp):
    cfg = ModelConfig(n_layer=2, n_embd=4, n_head=2, block_size=5, mlp=mlp, init_std=0.5)
    params = init_params(cfg, 5, random.Random(1))
    batch = [[4, 0, 1, 2, 3, 4], [4, 2, 2, 4]]
    engine = RefEngine(cfg, OptimConfig(), 5, params)
    engine.forward_backward(batch)
    grads = engine.gradients()
    def loss_at(name, i, delta):
        moved = {k: Tensor(v.shape, v.data[:]) for k, v in params.items()}
        moved[name].data[i] += delta
        return RefEngine(cfg, OptimConfig(), 5, moved).loss(batch)

    rng, h, checked = random.Random(2), 1e-5, 0
    for name, t in params.items():
        for i in rng.sample(range(len(t.data)), min(6, len(t.data))):
            numeric = (loss_at(name, i, h) - loss_at(name, i, -h)) / (2 * h)
            assert grads[name].data[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, i)
            checked += 1
    assert checked > 50


@pytest.mark.slow
def test_deep_model_trains_without_recursion_error():
    """n_layer 2, n_embd 64, block 64: the original's recursive sort fails on this graph."""
    cfg = ModelConfig(n_layer=2, n_embd=64, n_head=4, block_size=64)
    trainer = new_trainer(RefEngine, ["emma"], cfg, OptimConfig(), TrainConfig(num_steps=2),
                          random.Random(0))
    losses = sequence_losses(trainer.batch(0)[0], trainer.engine.state_dict, cfg)
    loss = (1 / len(losses)) * sum(losses)
    with pytest.raises(RecursionError):  # the oracle that this graph is deep enough to matter
        topological_order_recursive(loss)
    forward_only = trainer.engine.loss(trainer.batch(0))  # logits path, no graph walk
    results = [trainer.step(), trainer.step()]
    assert results[0].loss == pytest.approx(forward_only, rel=1e-12)
    assert results[1].loss < results[0].loss  # one Adam step on the same document helps
