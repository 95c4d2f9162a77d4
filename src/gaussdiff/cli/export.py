"""``gaussdiff export RUN --diffusers DIR``: a model whose network is a diffusers UNet2DModel (kind
``diffusers_unet2d``) as a folder that ``diffusers.DDPMPipeline.from_pretrained(DIR)`` loads: ``unet/``,
``scheduler/`` and ``model_index.json``, written whole into a temporary sibling and then renamed onto DIR.

gaussdiff's own UNet and MLP are not diffusers classes, so they are refused. A class-conditional model is exported as
it is, with a warning: its UNet2DModel takes ``class_labels`` (0..K-1, K for no class), which DDPMPipeline never
passes, so it loads there but runs only in a loop that passes them.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from ..atomic import replace_folder, temporary_folder
from ..data.files import check_writable_parent
from ..errors import InputError
from ..nets.diffusers_unet import KIND, save_pipeline
from ..saved import find_model_dir, load_model
from .common import HelpFormatter


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model as a folder another library loads", formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("--diffusers", required=True, metavar="DIR",
                   help=f"write a diffusers DDPMPipeline folder (unet/, scheduler/, model_index.json); the model's "
                        f"network must be of kind {KIND}")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")


def _out_folder(path: str, overwrite: bool, model_dir: Path) -> Path:
    """DIR, checked before any work: its parent can be written, it does not exist (or is a folder and --overwrite is
    given), and it neither is nor holds the model being exported."""
    out = check_writable_parent(path)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder; give another --diffusers DIR")
    model_dir = model_dir.resolve()
    if out.resolve() == model_dir or out.resolve() in model_dir.parents:
        raise InputError(f"--diffusers {out} would replace the model it exports ({model_dir}); give another folder")
    return out


def run(args) -> None:
    out = _out_folder(args.diffusers, args.overwrite, find_model_dir(args.run))
    model = load_model(args.run, weights=args.weights)
    kind = model.network.config["kind"]
    if kind != KIND:
        raise InputError(f"export to diffusers needs network kind {KIND}; the network of {args.run} is {kind!r} "
                         f"(gaussdiff's own networks are not diffusers classes; train with --network {KIND})")
    K = model.network.config["num_classes"]
    if K:
        warnings.warn(f"the model is class-conditional ({K} classes): DDPMPipeline passes no class_labels, so run its "
                      f"unet in a loop that passes class_labels in 0..{K - 1}, or {K} for no class")
    tmp = temporary_folder(out, "new")
    try:
        save_pipeline(model.network, tmp, model.schedule, model.prediction_type, model.variance_type)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {out}: a diffusers DDPMPipeline ({args.weights} weights, prediction_type {model.prediction_type}, "
          f"T = {model.schedule.T}); load it with diffusers.DDPMPipeline.from_pretrained({str(out)!r})")
