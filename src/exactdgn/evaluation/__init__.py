"""Evaluation helpers shared by the command line and the experiments.

Training curves scored with the exact likelihood, exact evaluation of VAE-type models (exact
``log p(x)`` beside the ELBO, IWAE bound and importance sampling), train/test splits, JSON and
markdown results, and the demo report.
"""

from ._curves import em_curve, refit_curve, vae_curve
from ._demo import run_demo
from ._environment import environment
from ._external import evaluate_external, load_torch_decoder, load_torch_encoder
from ._split import STD_FLOOR, split_data
from ._tables import flatten, json_default, markdown_table, write_json
from ._vae import evaluate_vae, vae_to_exact

__all__ = [
    "STD_FLOOR",
    "em_curve",
    "environment",
    "evaluate_external",
    "evaluate_vae",
    "flatten",
    "json_default",
    "load_torch_decoder",
    "load_torch_encoder",
    "markdown_table",
    "refit_curve",
    "run_demo",
    "split_data",
    "vae_curve",
    "vae_to_exact",
    "write_json",
]
