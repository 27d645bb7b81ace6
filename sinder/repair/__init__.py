"""SINDER repair (Wang, Zhang, Salzmann, ECCV 2024): singular-value fine-tuning with the neighbour loss."""

from .loss import NeighbourLoss, neighbour_loss
from .options import RepairOptions
from .pipeline import REPORT_NAME, run_repair
from .svd import SVDLinear, apply_svd, fold_svd
from .train import RepairTrainer, resume_path_for

__all__ = [
    "REPORT_NAME",
    "NeighbourLoss",
    "RepairOptions",
    "RepairTrainer",
    "SVDLinear",
    "apply_svd",
    "fold_svd",
    "neighbour_loss",
    "resume_path_for",
    "run_repair",
]
