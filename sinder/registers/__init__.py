"""Test-time registers (Jiang et al., arXiv 2506.08010): a training-free repair served beside SINDER."""

from .model import TestTimeRegisters, move_to_register, signed_max
from .neurons import NeuronSearch, find_register_neurons

__all__ = ["NeuronSearch", "TestTimeRegisters", "find_register_neurons", "move_to_register", "signed_max"]
