"""Train the digits classifier whose features FD-digits reads (``gaussdiff score``, ``features.digits_report``).

Reproducible: the 1,500-image training split only (the 297 held-out images are used once, to state the accuracy),
torch.manual_seed, one thread, deterministic algorithms, a fixed number of epochs and no model selection. Light
augmentation: every image shifted by a random -1, 0 or +1 pixel in each direction (zeros shifted in, the digits'
background). Writes the weights (safetensors) and the JSON config with the held-out accuracy, the command, the
commit (and whether the tree was dirty) and the SHA-256 of this script, and prints the accuracy. The features FD
reads are the penultimate layer's pre-activations ("feature"): after its ReLU 31 of the 64 units are 0 on every
digit, a singular covariance.

    python benchmarks/digits_classifier.py        # writes src/gaussdiff/assets/digits_classifier.{json,safetensors}
    python benchmarks/digits_classifier.py --out /tmp/check/digits_classifier.json    # a second copy to compare
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gaussdiff.data.digits import CLASSES, LEVELS, digits_split
from gaussdiff.features import DIGITS_NET, FeatureNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402
from provenance import git_state  # noqa: E402

ARCHITECTURE = {"kind": "cnn", "input_shape": [1, 8, 8], "levels": LEVELS, "channels": [16, 32], "pools": [1, 2],
                "feature_dim": 64, "classes": CLASSES, "feature_layer": "feature"}
SEED, EPOCHS, BATCH_SIZE, LR, WEIGHT_DECAY = 0, 60, 50, 2e-3, 1e-4


def shifted(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image (B, C, H, W) moved by its own random (dy, dx) in {-1, 0, 1}^2, zeros shifted in."""
    b, c, h, w = images.shape
    padded = F.pad(images, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, b), generator=generator)
    rows = (torch.arange(h) + dy[:, None])[:, None, :, None]
    cols = (torch.arange(w) + dx[:, None])[:, None, None, :]
    return padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def train(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> None:
    """AdamW on the cross-entropy for EPOCHS epochs of shuffled, shifted batches; the learning rate follows a cosine
    from LR to 0."""
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(net.module.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = EPOCHS * -(-len(images) // BATCH_SIZE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    net.module.train()
    for epoch in range(EPOCHS):
        total = 0.0
        for rows in torch.randperm(len(images), generator=generator).split(BATCH_SIZE):
            x = net.pixels.forward(shifted(images[rows], generator))
            loss = F.cross_entropy(net.module(x), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(rows)
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  training loss {total / len(images):.4f}")
    net.module.eval()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DIGITS_NET), help="the JSON config to write (weights beside it)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    clock = Clock()
    net = FeatureNet({**ARCHITECTURE, "weights": out.stem + ".safetensors"})
    images, labels = digits_split("train")
    train(net, torch.from_numpy(images), torch.from_numpy(labels))
    seconds, ratio = clock.seconds(), clock.ratio()

    heldout, heldout_labels = digits_split("test")
    correct = int((net.predict(heldout) == heldout_labels).sum())
    parameters = sum(p.numel() for p in net.module.parameters())
    script = Path(__file__).resolve()
    command = " ".join(["python benchmarks/digits_classifier.py", *(sys.argv[1:] if argv is None else argv)])
    code = git_state()  # the script's own text is stamped separately by its SHA-256
    net.save(out, heldout={"images": len(heldout), "correct": correct, "accuracy": correct / len(heldout)},
             trained={"data": f"digits training split ({len(images)} images)", "command": command,
                      "commit": code["commit"], "dirty": code["dirty"],
                      "script_sha256": hashlib.sha256(script.read_bytes()).hexdigest(), "seed": SEED,
                      "epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "weight_decay": WEIGHT_DECAY,
                      "augmentation": "random shift by -1, 0 or +1 pixel per axis", "parameters": parameters,
                      "torch": torch.__version__, "numpy": np.__version__, "machine": platform.machine(),
                      "threads": 1, "seconds": round(seconds, 1), "cpu_per_wall": round(ratio, 2)})
    size = (out.parent / net.config["weights"]).stat().st_size
    print(f"held-out accuracy {correct}/{len(heldout)} = {100 * correct / len(heldout):.2f} %  "
          f"({parameters} parameters, {size / 1024:.0f} KiB; trained in {seconds:.1f} s on 1 thread, "
          f"cpu/wall {ratio:.2f})")
    print(f"wrote {out} and {out.parent / net.config['weights']}")


if __name__ == "__main__":
    main()
