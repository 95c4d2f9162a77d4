"""``gaussdiff score SAMPLES.npy --data digits``: FD in a classifier's feature space, with what keeps it honest
(held-out FD and its floor, exact copies, nearest-training distances) and the class histogram; a table, and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text_atomically
from ..errors import InputError
from ..features import FeatureNet, digits_net, digits_report, load_images, score_report
from .common import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser("score", help="FD-digits and the copy checks of image samples, offline",
                       formatter_class=HelpFormatter)
    p.add_argument("samples", help=".npy of images in the data's integer levels, (N, C, H, W) or (N, H, W)")
    p.add_argument("--data", required=True,
                   help="digits (the built-in set: FD against its 1,500 training and 297 held-out images, the floor, "
                        "copies) or a .npy of your reference (training) images in the same levels")
    p.add_argument("--feature-net", default=None,
                   help="JSON config of a feature net (weights beside it, named in it); default: the shipped digits "
                        "classifier")
    p.add_argument("--out", default=None, help="also write the report to this JSON file")


def _out_path(out: str | None) -> Path | None:
    """The report's path, checked before any work: its folder exists and it is not a folder."""
    if out is None:
        return None
    path = Path(out)
    if not path.parent.is_dir() or path.is_dir():
        raise InputError(f"{path}: cannot write the report there ({'a folder' if path.is_dir() else 'no such folder'})")
    return path


def _percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def _row(measure: str, value: str, reference: str = "") -> str:
    return f"{measure:<52}{value:>10}" + (f"   {reference}" if reference else "")


def format_report(r: dict) -> str:
    """The report as a readable table: each measure beside its real-data reference (with held-out images)."""
    accuracy, held = r["feature_net_heldout_accuracy"], "heldout_images" in r
    n = r.get("heldout_images")
    lines = [f"feature net: {r['feature_net']}" + (f" (held-out accuracy {_percent(accuracy)})" if accuracy else ""),
             _row("measure", "samples", "reference: real images" if held else ""),
             _row(f"FD vs {r['train_images']} training images (all {r['samples']} samples)", f"{r['fd_train']:.3f}",
                  f"{r['fd_heldout_vs_train']:.3f} (the {n} held-out images)" if held else "")]
    if held:
        lines.append(_row(f"FD vs {n} held-out images (first {n} samples)", f"{r['fd_heldout']:.3f}",
                          f"floor {r['floor']:.3f} ({n} training images; {r['floor_mean']:.3f} ± "
                          f"{r['floor_sd']:.3f} over {r['floor_draws']} draws)"))
    lines.append(_row("exact copies of a training image", _percent(r["exact_copies"]),
                      f"{_percent(r['heldout_exact_copies'])} of the held-out images" if held else ""))
    lines.append(_row("median distance to the nearest training image", f"{r['nearest_train_median']:.4f}",
                      f"{r['heldout_nearest_train_median']:.4f} held-out (samples / held-out: "
                      f"{r['nearest_ratio']:.2f})" if held else ""))
    total = sum(r["class_histogram"])
    lines.append("class histogram: " + "  ".join(f"{c}: {_percent(k / total)}"
                                                 for c, k in zip(r["classes"], r["class_histogram"])))
    return "\n".join(lines)


def run(args) -> None:
    out = _out_path(args.out)
    net = FeatureNet.load(args.feature_net) if args.feature_net else digits_net()
    samples = load_images(args.samples, net)
    if args.data == "digits":
        report = digits_report(samples, net)
    else:
        report = {"data": str(args.data), **score_report(samples, load_images(args.data, net), net)}
    print(f"{report['samples']} samples of {args.samples} against {report['data']}")
    print(format_report(report))
    if out is not None:
        try:
            write_text_atomically(out, json.dumps(report, indent=2) + "\n")
        except OSError as e:
            raise InputError(f"{out}: cannot write ({e.strerror or e})") from None
        print(f"wrote {out}")
