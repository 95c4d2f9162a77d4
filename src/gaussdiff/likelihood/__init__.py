"""Likelihood (layer 2, beside the samplers): the variational bound in bits/dim with its per-step terms,
and the exact log-likelihood through the probability-flow ODE."""
