"""Let there be Autograd, to recursively apply the chain rule through a computation graph.

This is the original microgpt's `Value`, unchanged in its arithmetic: every node keeps its
children and the local derivative with respect to each, and `backward` walks the graph in
reverse topological order. Two additions that change no number: each node records the
operation that made it (`_op`, as micrograd's Value does), so a picture of the graph can
name it; and the topological sort is an explicit-stack walk that visits nodes in exactly the
order of the original's recursive `build_topo`, so deep graphs (more layers, wider models)
no longer hit Python's recursion limit.
"""

from __future__ import annotations

import math


class Value:
    __slots__ = ("data", "grad", "_children", "_local_grads", "_op")  # Python memory optimization

    def __init__(self, data, children=(), local_grads=(), op=""):
        self.data = data  # scalar value of this node calculated during forward pass
        self.grad = 0  # derivative of the loss w.r.t. this node, calculated in backward pass
        self._children = children  # children of this node in the computation graph
        self._local_grads = local_grads  # local derivative of this node w.r.t. its children
        self._op = op  # the operation that made this node ("" for a leaf), as in micrograd

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1, 1), "+")

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")

    def __pow__(self, other):
        return Value(self.data**other, (self,), (other * self.data ** (other - 1),), f"**{other}")

    def log(self):
        return Value(math.log(self.data), (self,), (1 / self.data,), "log")

    def exp(self):
        return Value(math.exp(self.data), (self,), (math.exp(self.data),), "exp")

    def relu(self):
        return Value(max(0, self.data), (self,), (float(self.data > 0),), "relu")

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1

    def __repr__(self):
        return f"Value(data={self.data}, grad={self.grad})"

    def backward(self):
        topo = topological_order(self)
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


def topological_order(root: Value) -> list[Value]:
    """Children before parents, in the order of the original's recursive build_topo.

    The original:
        def build_topo(v):
            if v not in visited:
                visited.add(v)
                for child in v._children:
                    build_topo(child)
                topo.append(v)
    Here each stack entry is a node and an iterator over its remaining children, so the
    walk resumes exactly where the recursive call would have returned to.
    """
    topo = []
    visited = {root}
    stack = [(root, iter(root._children))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if child not in visited:
                visited.add(child)
                stack.append((child, iter(child._children)))
                break
        else:  # every child is done: the node is finished, as when build_topo returns
            stack.pop()
            topo.append(node)
    return topo
