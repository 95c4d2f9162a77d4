"""gaussdiff: Gaussian diffusion models — the seed's forward chain, a learned reverse chain,
samplers and the bound, for any continuous data."""

import os

# OpenMP threads that wait by spinning (libgomp's default: 300,000 spins) hold a core while a sibling thread that
# another process preempted catches up: beside one busy process on 2 cores, default MLP training steps at 2 threads
# took 430-1,590 ms (medians) where passive waiting took 16-33 ms (1 thread: 16-67 ms). libgomp reads the variable
# once, when torch loads it, so it is set here, before the gaussdiff command and python -m gaussdiff import torch; a
# value the user set wins. It cannot reach a program that imported torch before gaussdiff.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"
