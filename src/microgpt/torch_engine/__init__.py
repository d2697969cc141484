"""The PyTorch engine: the original microgpt on torch tensors, for GPUs and for torchrun's DDP."""

from .model import TorchEngine

__all__ = ["TorchEngine"]
