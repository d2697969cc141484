"""The C core's optimised kernels against their plain twins (STYLE.md point 9), called through
ctypes on the compiled extension itself: the forward bit for bit (the same sums in the same
order), the backward to rounding, with outputs that already hold numbers (a backward adds)."""

from __future__ import annotations

import ctypes
import itertools
import math
import random

import pytest
from run_helpers import require_engine

require_engine("c")

from microgpt.c_engine import _core32, _core64  # noqa: E402  (after the skip)

SHAPES = list(itertools.product((1, 3, 4, 5, 9), (1, 4, 16, 17), (1, 5, 16, 27, 64)))  # N, C, OC


def kernels(module):
    lib = ctypes.CDLL(module.__file__)
    real = ctypes.c_double if module.REAL_BYTES == 8 else ctypes.c_float
    return lib, real


def array(real, values):
    return (real * len(values))(*values)


def rel(a, b) -> float:
    top = max((abs(x) for x in b), default=0.0)
    return max((abs(x - y) / max(abs(y), 1e-3 * top, 1e-30) for x, y in zip(a, b, strict=True)),
               default=0.0)  # fmt: skip


@pytest.mark.parametrize("module", [_core64, _core32], ids=["float64", "float32"])
def test_linear_forward_is_its_plain_twin_bit_for_bit(module):
    lib, real = kernels(module)
    rng = random.Random(1)
    for N, C, OC in SHAPES:
        inp = array(real, [rng.gauss(0, 1) for _ in range(N * C)])
        w = array(real, [rng.gauss(0, 1) for _ in range(C * OC)])
        plain, fast = array(real, [7.0] * (N * OC)), array(real, [-3.0] * (N * OC))
        lib.mg_linear_forward_naive(plain, inp, w, N, C, OC)
        lib.mg_linear_forward(fast, inp, w, N, C, OC)
        assert list(plain) == list(fast), (N, C, OC)  # and both overwrite what was there
        # the plain twin is the reference's sum: left to right over the inputs, from 0
        for n, o in ((0, 0), (N - 1, OC - 1)):
            total = 0.0
            for c in range(C):
                total = total + w[c * OC + o] * inp[n * C + c]
            if module is _core64:
                assert plain[n * OC + o] == total


@pytest.mark.parametrize("module", [_core64, _core32], ids=["float64", "float32"])
def test_linear_backward_is_its_plain_twin_to_rounding(module):
    lib, real = kernels(module)
    tol = 1e-12 if module is _core64 else 1e-4
    rng = random.Random(2)
    for N, C, OC in SHAPES:
        dout = [rng.gauss(0, 1) for _ in range(N * OC)]
        inp = [rng.gauss(0, 1) for _ in range(N * C)]
        wt = [rng.gauss(0, 1) for _ in range(OC * C)]  # (OC, C): the state_dict's layout
        start_dinp = [rng.gauss(0, 1) for _ in range(N * C)]
        start_dw = [rng.gauss(0, 1) for _ in range(C * OC)]
        out = {}
        for name in ("mg_linear_backward_naive", "mg_linear_backward"):
            dinp, dw = array(real, start_dinp), array(real, start_dw)
            getattr(lib, name)(dinp, dw, array(real, dout), array(real, inp), array(real, wt),
                               N, C, OC)  # fmt: skip
            out[name] = (list(dinp), list(dw))
        (d1, w1), (d2, w2) = out.values()
        assert rel(d2, d1) < tol and rel(w2, w1) < tol, (N, C, OC)
        # the plain twin adds the textbook products: dinp += dout wt, dw += inp^T dout
        n, c, o = N - 1, C - 1, OC - 1
        want = start_dinp[n * C + c] + sum(dout[n * OC + k] * wt[k * C + c] for k in range(OC))
        assert rel([d1[n * C + c]], [want]) < tol
        want = start_dw[c * OC + o] + sum(inp[m * C + c] * dout[m * OC + o] for m in range(N))
        assert rel([w1[c * OC + o]], [want]) < tol


@pytest.mark.parametrize("name,exponent", [("mg_pow_minus_one", -1), ("mg_pow_minus_half", -0.5),
                                           ("mg_pow_two", 2)])  # fmt: skip
def test_quick_powers_are_pythons_powers(name, exponent):
    """The core's x ** -1, x ** -0.5, x ** 2 (quick where provably the same) == Python's, which
    calls libm's pow; the inputs include hundreds where pow is not the correctly rounded
    quotient, root or square (its last bit differs), and the edges of the quick path."""
    fn = getattr(ctypes.CDLL(_core64.__file__), name)
    fn.restype, fn.argtypes = ctypes.c_double, [ctypes.c_double]
    rng = random.Random(3)
    xs = [math.ldexp(rng.random() + 0.5, rng.randint(-60, 60)) for _ in range(300_000)]
    xs += [0.0, 1.0, 2.0, 0.25, 3.0, 1e-300, 1e300, 2.0**-900, 2.0**900, 2.0**-400, 5e-324]
    if exponent == 2:
        xs += [-x for x in xs[:1000]]
    naive = {-1: lambda x: 1 / x if x else math.inf, -0.5: lambda x: 1 / math.sqrt(x) if x
             else math.inf, 2: lambda x: x * x}[exponent]  # fmt: skip
    hard = 0
    for x in xs:
        try:
            want = x**exponent
        except (OverflowError, ZeroDivisionError):  # where Python raises, C's pow gives inf
            want = math.inf
        assert fn(x) == want, x
        hard += naive(x) != want
    assert hard > 50  # the inputs did reach pow's own last-bit choices
