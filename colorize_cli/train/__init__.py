"""Training: data streaming from folders and tar shards, the loop, checkpoints and export."""

from .command import train_command
from .data import MissingTrainingExtraError, TrainingDataError, TrainingError
from .loop import TrainOptions, TrainResult, train
from .objectives import ObjectiveOptions

__all__ = ["MissingTrainingExtraError", "ObjectiveOptions", "TrainOptions", "TrainResult", "TrainingDataError",
           "TrainingError", "train", "train_command"]
