"""The reference engine: the original microgpt's scalar autograd, model and Adam.

Standard library only; it must never import numpy, torch or another engine.
"""
