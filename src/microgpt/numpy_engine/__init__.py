"""The NumPy engine: the reference model as llm.c-style paired forward/backward layers.

Float64 by default, where it agrees with the reference engine to ~1e-12; float32 for speed.
It imports NumPy and the standard-library core, never another engine.
"""
