"""microgpt: the whole GPT algorithm in code you can read in one sitting.

Everything else is just efficiency: every engine computes the same function as the
reference engine (`microgpt.ref`), which reproduces the original program bit for bit.
"""

__version__ = "0.1.0"
