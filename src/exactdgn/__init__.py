"""exactdgn: exact likelihood, posterior and EM for deep generative networks with
continuous piecewise-affine (ReLU-family) decoders.

The public names and the subpackages are imported on first use (PEP 562): ``import exactdgn``
loads no numpy, scikit-learn or scipy by itself, so that the command line's start-up
(:mod:`exactdgn.__main__`) runs those imports under its own Ctrl-C handling.
"""

import importlib
import sys
import types

__version__ = "0.1.0"

_PUBLIC = {
    "Activation": ".decoder",
    "Decoder": ".decoder",
    "NotPiecewiseAffineError": ".decoder",
    "ExactDGNImputer": ".imputation",
    "ExactDGN": ".model",
    "Partition": ".partition",
    "PartitionTooLargeError": ".partition",
    "partition": ".partition",
}
_SUBMODULES = frozenset(
    {
        "baselines",
        "cli",
        "dask",
        "datasets",
        "decoder",
        "em",
        "evaluation",
        "gaussian",
        "imputation",
        "inference",
        "io",
        "model",
        "outliers",
        "plotting",
        "training",
    }
)

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


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module("." + name, __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


class _Package(types.ModuleType):
    """The package's module type: the import system binds each subpackage on its parent once
    loaded, and the subpackage :mod:`exactdgn.partition` shares its name with the public
    function :func:`partition`, which keeps the name (as with eager imports)."""

    def __setattr__(self, name: str, value) -> None:
        if name == "partition" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __reduce__(self):  # pickled by name, as a plain module (cloudpickle, dask, joblib)
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _Package
