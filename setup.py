"""The build's one compiled part: the C engine (src/microgpt/c_engine/csrc), OPTIONAL.

Everything else is in pyproject.toml. Where a C compiler works, `pip install .` (or `-e .`)
builds two extensions, `_core64` (double) and `_core32` (float); where it does not, the build
says so in a warning and the install goes on without them, and `--engine c` then says in one
line how to get it (engine.ENGINES). The core is plain C99, warnings are errors, and floating
point is never contracted into fused multiply-adds: the double engine keeps the reference's
rounding, bit for bit, in its forward pass.
"""

from setuptools import Extension, setup

CSRC = "src/microgpt/c_engine/csrc"
FLAGS = [
    "-std=c99", "-O3", "-Wall", "-Wextra", "-Werror",
    "-ffp-contract=off",  # a * b + c stays two roundings, as in Python
    "-fno-builtin-pow",  # pow(x, -1.0) is libm's pow, as Python's x ** -1, not folded to 1 / x
    "-fno-math-errno",  # sqrt as one instruction (vectorised); no result changes
]  # fmt: skip
HEADERS = [f"{CSRC}/microgpt.h", f"{CSRC}/microgpt.c", f"{CSRC}/module.c"]

setup(
    ext_modules=[
        Extension(
            "microgpt.c_engine._core64",
            sources=[f"{CSRC}/microgpt.c", f"{CSRC}/module.c"],
            depends=HEADERS,
            extra_compile_args=FLAGS,
            libraries=["m"],
            optional=True,
        ),
        Extension(
            "microgpt.c_engine._core32",
            sources=[f"{CSRC}/float32.c"],
            depends=HEADERS,
            extra_compile_args=FLAGS,
            libraries=["m"],
            optional=True,
        ),
    ]
)
