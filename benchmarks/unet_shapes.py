"""Training speed of candidate UNet shapes for the digits on a 2-core CPU (issue 9): which net is the default.

Each shape trains for ``--seconds`` on random 1x8x8 data at batch 64: v-prediction L_simple (the trainer's
``losses.simple_loss``), backward, fused AdamW step. Shapes run round-robin ``--repeats`` times (so a burst of
load from elsewhere hits them all alike) and the table gives each one's median steps/s, with its parameter count,
cpu-time / wall-time ratio (about the thread count when the cores were ours; lower means the run was starved
and is not comparable), the thread count and the commit; with ``--out``, also one JSON line per shape, stamped with
the run's provenance (provenance.py).

Candidates: three nets of the size the reference libraries use for such images (1.6-2.6 M parameters with
attention at two levels; one of them a real diffusers ``UNet2DModel``), and six small two-level gaussdiff UNets
(base 32/48/64, 1-2 blocks per level, attention at 4x4 or none).

    python benchmarks/unet_shapes.py --seconds 30 --repeats 3
    python benchmarks/unet_shapes.py --seconds 2 --shapes s32-r1-a4 s32-r1   # a quick check
    python benchmarks/unet_shapes.py --seconds 12 --repeats 2 --out benchmarks/results/unet_shapes.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from clock import Clock  # noqa: E402
from provenance import Provenance  # noqa: E402

from gaussdiff.losses import simple_loss  # noqa: E402
from gaussdiff.nets import build_network, unet_config  # noqa: E402
from gaussdiff.nets.adapter import ForeignModel  # noqa: E402
from gaussdiff.schedule import make_schedule  # noqa: E402

SHAPE = [1, 8, 8]
T = 1000
NONE = dict(attention_resolutions=[], mid_attention=False)
# name -> gaussdiff UNet options on top of the "digits" preset (norm_groups 8, 4 heads, dropout 0)
CANDIDATES = {
    "ref-b32-122-r2-a8,4": dict(base_channels=32, channel_mult=[1, 2, 2], num_res_blocks=2,
                                attention_resolutions=[8, 4]),
    "ref-b48-12-r1-a8,4": dict(base_channels=48, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8, 4]),
    "diffusers-32,64,64-r2-a4,2": None,  # diffusers' UNet2DModel, built by diffusers_unet()
    "s32-r1-a4": dict(base_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4]),
    "s32-r1": dict(base_channels=32, channel_mult=[1, 2], num_res_blocks=1, **NONE),
    "s32-r2-a4": dict(base_channels=32, channel_mult=[1, 2], num_res_blocks=2, attention_resolutions=[4]),
    "s48x1-r1-a4": dict(base_channels=48, channel_mult=[1, 1], num_res_blocks=1, attention_resolutions=[4]),
    "s48x1-r2": dict(base_channels=48, channel_mult=[1, 1], num_res_blocks=2, **NONE),
    "s64x1-r1": dict(base_channels=64, channel_mult=[1, 1], num_res_blocks=1, **NONE),
}


def diffusers_unet() -> torch.nn.Module:
    """A diffusers UNet2DModel of the reference size: 3 levels (32, 64, 64), attention at 4x4 and 2x2."""
    from diffusers import UNet2DModel

    return ForeignModel(UNet2DModel(
        sample_size=SHAPE[1], in_channels=SHAPE[0], out_channels=SHAPE[0], block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2, norm_num_groups=8))


def build(name: str) -> torch.nn.Module:
    options = CANDIDATES[name]
    return diffusers_unet() if options is None else build_network(unet_config(SHAPE, T, "digits", **options))


def steps_per_second(net: torch.nn.Module, seconds: float, batch: int, seed: int) -> tuple[float, float]:
    """(steps/s, cpu/wall) of training steps run for ``seconds`` after 3 warm-up steps."""
    schedule = make_schedule("linear", T)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, fused=True)
    g = torch.Generator().manual_seed(seed)

    def step():
        loss = simple_loss(net, torch.randn(batch, *SHAPE, generator=g), schedule, "v_prediction", generator=g)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()

    for _ in range(3):
        step()
    clock, steps = Clock(), 0
    while clock.seconds() < seconds:
        step()
        steps += 1
    return steps / clock.seconds(), clock.ratio()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="timed training per shape and repeat")
    p.add_argument("--repeats", type=int, default=1, help="round-robin passes over the shapes (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shapes", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES), metavar="NAME",
                   help=f"candidates to time: {', '.join(CANDIDATES)}")
    p.add_argument("--out", type=Path, default=None, help="also append one JSON line per shape to this file")
    args = p.parse_args(argv)
    if not args.seconds > 0 or args.repeats < 1 or args.threads < 1 or args.batch_size < 1:
        p.error("--seconds must be > 0 and --repeats, --threads, --batch-size >= 1")
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    nets = {name: build(name) for name in args.shapes}
    runs = {name: [] for name in args.shapes}
    for repeat in range(args.repeats):
        for name, net in nets.items():
            runs[name].append(steps_per_second(net, args.seconds, args.batch_size, seed=repeat))
    code = prov.record
    commit = f"{code['commit'][:7]}{'+dirty' if code['dirty'] else ''}" if code["commit"] else "unknown"
    rows = []
    print(f"batch {args.batch_size} on {'x'.join(map(str, SHAPE))}, {args.seconds:g} s x {args.repeats} per shape\n")
    print(f"| {'config':<28} | parameters | steps/s | cpu/wall | threads | commit |")
    print(f"|{'-' * 30}|-----------:|--------:|---------:|--------:|--------|")
    for name, net in nets.items():
        rate = statistics.median(r for r, _ in runs[name])
        ratio = statistics.median(c for _, c in runs[name])
        params = sum(q.numel() for q in net.parameters())
        print(f"| {name:<28} | {params:>10,} | {rate:>7.2f} | {ratio:>8.2f} | {torch.get_num_threads():>7} "
              f"| {commit} |")
        rows.append(prov.stamp({"shape": name, "parameters": params, "steps_per_s": rate, "cpu_wall": ratio,
                                "runs": [{"steps_per_s": r, "cpu_wall": c} for r, c in runs[name]]}))
    if args.out:
        with args.out.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
