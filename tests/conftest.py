"""Settings shared by the whole suite."""

import os

import torch

# Nothing may reach a model hub: diffusers objects are built from configs with random weights.
os.environ["HF_HUB_OFFLINE"] = "1"
# The tests run many tiny batched ops; on a busy 2-core machine torch's thread pool makes those over
# 10x slower than one thread (threads wait on a preempted sibling). One thread keeps the suite steady.
torch.set_num_threads(1)
