"""Training logs: RUN/metrics.jsonl (always) and TensorBoard (optional), written by rank 0."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import InputError


def tensorboard_writer(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise InputError("--tensorboard needs the tensorboard package: pip install 'gaussdiff[tensorboard]'") from None
    return SummaryWriter(str(run / "tensorboard"))


class MetricsLog:
    """One JSON object a line: interval means of loss and grad norm, learning rate, speed, the loss in each
    quartile of t (as improved-diffusion logs it), and any further fields of that step (the held-out losses).
    Sums stay tensors between lines (no sync per step); under data parallel they are summed over ranks when a line
    is written, so the loss is the global batch's."""

    def __init__(self, path: Path | None, T: int, world: int = 1, writer=None):
        self.path, self.T, self.world, self.writer = path, T, world, writer
        self._reset()

    def _reset(self):
        self.steps, self.grad = 0, 0.0
        self.q_sum, self.q_n = torch.zeros(4), torch.zeros(4)  # float32: MPS has no float64; 1e-7 relative is plenty

    def add(self, per_sample_loss: torch.Tensor, t: torch.Tensor) -> None:
        q = ((t - 1) * 4 // self.T).clamp(0, 3).to(per_sample_loss.device)
        self.q_sum = self.q_sum.to(q.device).index_add_(0, q, per_sample_loss.detach().float())
        self.q_n = self.q_n.to(q.device).index_add_(0, q, torch.ones_like(per_sample_loss, dtype=torch.float32))

    def end_step(self, grad_norm: float) -> None:
        self.steps += 1
        self.grad += grad_norm

    def write(self, step: int, lr: float, steps_per_s: float, elapsed: float, extra: dict | None = None) -> dict:
        """Write the interval's line, with the fields of ``extra`` appended, and start a new interval."""
        sums = torch.cat([self.q_sum, self.q_n])
        if self.world > 1:
            dist.all_reduce(sums)
        q_sum, q_n = sums[:4].cpu(), sums[4:].cpu()
        row = dict(step=step, loss=float(q_sum.sum() / q_n.sum()), lr=lr, grad_norm=self.grad / self.steps,
                   steps_per_s=steps_per_s, elapsed_s=elapsed)
        row.update({f"loss_q{i}": float(q_sum[i] / q_n[i].clamp(min=1)) for i in range(4)})
        self._reset()
        return self.write_row(row | (extra or {}))

    def write_row(self, row: dict) -> dict:
        """Append ``row`` (a "step" and numbers) to metrics.jsonl and TensorBoard: eval_NAME as eval/NAME, the
        others as train/NAME."""
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    tag = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
                    self.writer.add_scalar(tag, value, row["step"])
        return row

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
