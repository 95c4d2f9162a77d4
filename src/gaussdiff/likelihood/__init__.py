"""Likelihood (layer 2, beside the samplers): the variational bound in bits/dim with its per-step terms,
and the exact log-likelihood through the probability-flow ODE."""

from .elbo import Bound, check_quantized, elbo, elbo_importance, term_at
from .ode_nll import ODELikelihood, check_levels, check_options, dequantize, ode_log_prob, ode_nll
from .summary import mean_se

__all__ = ["Bound", "ODELikelihood", "check_levels", "check_options", "check_quantized", "dequantize", "elbo",
           "elbo_importance", "mean_se", "ode_log_prob", "ode_nll", "term_at"]
