"""gaussdiff: Gaussian diffusion models — the seed's forward chain, a learned reverse chain,
samplers and the bound, for any continuous data."""

__version__ = "0.2.0"
