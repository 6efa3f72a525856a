"""exactdgn: exact likelihood, posterior and EM for deep generative networks with
continuous piecewise-affine (ReLU-family) decoders."""

from .decoder import Activation, Decoder, NotPiecewiseAffineError
from .imputation import ExactDGNImputer
from .model import ExactDGN
from .partition import Partition, PartitionTooLargeError, partition

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Decoder",
    "ExactDGN",
    "ExactDGNImputer",
    "NotPiecewiseAffineError",
    "Partition",
    "PartitionTooLargeError",
    "__version__",
    "partition",
]
