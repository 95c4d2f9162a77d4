"""Pictures: model samples over data (a pair plot beyond two columns), the forward/backward chain strip, loss and
metric curves.

Every function takes numpy arrays (or torch tensors) and a destination path, writes a PNG
atomically (a temporary file in the same folder, then ``os.replace``), closes its figure and
returns the path. Inputs are checked before anything is drawn; a wrong shape raises
:class:`~gaussdiff.errors.InputError` and leaves any file already at the path untouched.
Points that are not finite (a diverged sampler) are left out and counted in the panel's title. Point pictures
name their axes by the data's columns (``columns``; default "column j") and the units the points are in (``units``:
DATA_UNITS, after the model's inverse transform, or MODEL_UNITS, the space the chain runs in).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import write_atomically
from .errors import InputError  # noqa: E402

DPI = 120
PANEL_INCHES = 2.6
DATA_COLOR, MODEL_COLOR, LR_COLOR = "#4c72b0", "#dd8452", "#55a868"
DATA_UNITS, MODEL_UNITS = "data units", "model units"
PAIR_COLUMNS = 4  # a pair plot shows the first PAIR_COLUMNS columns: PAIR_COLUMNS^2 panels


# --- inputs --------------------------------------------------------------------------------------

def _array(x, name: str) -> np.ndarray:
    """`x` (numpy array, torch tensor on any device, or sequence) as a float64 numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be an array of numbers ({e})") from None


def _points(x, name: str) -> np.ndarray:
    """`x` checked to be an (N, D) point cloud with N >= 1 and D >= 2."""
    a = _array(x, name)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
        raise InputError(f"{name} must have shape (N, D) with N >= 1 and D >= 2, "
                         f"got shape {a.shape}")
    return a


def _vector(x, name: str, n: int | None = None) -> np.ndarray:
    """`x` checked to be a non-empty 1-D array, of length `n` when given."""
    a = _array(x, name)
    if a.ndim != 1 or a.size == 0 or (n is not None and a.size != n):
        want = "a non-empty 1-D array" if n is None else f"a 1-D array of length {n}"
        raise InputError(f"{name} must be {want}, got shape {a.shape}")
    return a


def _dims_note(d: int) -> str:
    """The title suffix saying that only the first two of `d` dimensions are drawn."""
    return f"  (first 2 of {d} dims)" if d > 2 else ""


def _axis_labels(columns, d: int, units: str | None) -> list[str]:
    """One axis label per column of `d`: its name in `columns` (default "column j"), then the units when given."""
    if columns is not None and len(columns) != d:
        raise InputError(f"columns must name the {d} columns of the points, got {len(columns)} names")
    names = [str(c) for c in columns] if columns is not None else [f"column {j}" for j in range(d)]
    return [f"{name} ({units})" if units else name for name in names]


def _same_dims(samples: np.ndarray, data: np.ndarray | None) -> None:
    if data is not None and samples.shape[1] != data.shape[1]:
        raise InputError(f"samples and data must have the same dimension, "
                         f"got {samples.shape[1]} and {data.shape[1]}")


# --- drawing helpers -----------------------------------------------------------------------------

def _limits(clouds: list[np.ndarray]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Square (xlim, ylim) holding 99.8% of every cloud's first two coordinates, padded."""
    xy = np.concatenate([c[:, :2] for c in clouds])
    xy = xy[np.isfinite(xy).all(axis=1)]
    if len(xy) == 0:
        return (-3.5, 3.5), (-3.5, 3.5)
    lo, hi = np.quantile(xy, [0.001, 0.999], axis=0)
    center, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-6) * 1.08
    return (center[0] - half, center[0] + half), (center[1] - half, center[1] + half)


def _span(values: np.ndarray) -> tuple[float, float]:
    """(lo, hi) holding 99.8% of the finite `values` of one column, padded."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return -3.5, 3.5
    lo, hi = np.quantile(v, [0.001, 0.999])
    center, half = (lo + hi) / 2, max((hi - lo) / 2, 1e-6) * 1.08
    return center - half, center + half


def _non_finite_note(pts: np.ndarray, sep: str = "\n") -> str:
    """The title note counting the rows of `pts` left out for holding NaN or Inf ("" when none)."""
    bad = int((~np.isfinite(pts).all(axis=1)).sum())
    return f"{sep}({bad} non-finite not shown)" if bad else ""


def _scatter(ax, pts: np.ndarray, color: str, lims, label=None, cols=(0, 1), square=True) -> str:
    """Draw column cols[1] against cols[0] of the finite rows of `pts` in the window lims = (xlim, ylim), square
    (equal aspect) unless told; return a note on the rows left out."""
    xy = pts[:, list(cols)]
    ok = np.isfinite(xy).all(axis=1)
    size = float(np.clip(3000 / max(ok.sum(), 1), 0.5, 12))
    ax.scatter(xy[ok, 0], xy[ok, 1], s=size, c=color, alpha=0.5, linewidths=0,
               rasterized=True, label=label)
    ax.set_xlim(lims[0])
    ax.set_ylim(lims[1])
    if square:
        ax.set_aspect("equal")
    ax.grid(alpha=0.25)
    return _non_finite_note(xy)


def _figure(nrows: int, ncols: int, width: float, height: float, **kwargs):
    """A figure and its axes under a constrained layout with room for titles."""
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False,
                        layout=ConstrainedLayoutEngine(h_pad=0.08, w_pad=0.06), **kwargs)


def _save(fig, path) -> Path:
    """Write `fig` as a PNG at `path` atomically, close it, and return the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the constrained layout fits titles and labels: bbox_inches="tight" would draw the figure a second time
        write_atomically(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))
    finally:
        plt.close(fig)
    return path


# --- pictures ------------------------------------------------------------------------------------

def samples_over_data(samples, data, path, title=None, overlay=False, columns=None, units=None) -> Path:
    """Data and model samples (N, D) side by side on the same square window (+ an overlay), the first two columns;
    data None: the samples alone. Axes named by ``columns`` in ``units`` (module doc)."""
    s = _points(samples, "samples")
    d = None if data is None else _points(data, "data")
    _same_dims(s, d)
    labels = _axis_labels(columns, s.shape[1], units)
    clouds = [("model samples", s, MODEL_COLOR)] if d is None else [("data", d, DATA_COLOR),
                                                                     ("model samples", s, MODEL_COLOR)]
    lims = _limits([pts for _, pts, _ in clouds])
    ncols = len(clouds) + (overlay and d is not None)
    fig, [axes] = _figure(1, ncols, ncols * 3.6, 3.9, sharex=True, sharey=True)
    for ax, (name, pts, color) in zip(axes, clouds):
        ax.set_title(f"{name} (n = {len(pts)})" + _scatter(ax, pts, color, lims))
    if ncols > len(clouds):
        for name, pts, color in clouds:
            _scatter(axes[-1], pts, color, lims, label=name)
        axes[-1].set_title("overlay")
        axes[-1].legend(loc="upper right", markerscale=4, fontsize="small")
    for ax in axes:
        ax.set_xlabel(labels[0])
    axes[0].set_ylabel(labels[1])
    fig.suptitle((title or ("model samples" if d is None else "model samples over data")) + _dims_note(s.shape[1]))
    return _save(fig, path)


def pair_plot(samples, data, path, title=None, columns=None, units=None, max_columns: int = PAIR_COLUMNS) -> Path:
    """Every pair of the first ``max_columns`` columns of (N, D) points: data below the diagonal, model samples above
    it, both columns' histograms on it (data None: samples on both sides). Axes named by ``columns`` in ``units``."""
    s = _points(samples, "samples")
    d = None if data is None else _points(data, "data")
    _same_dims(s, d)
    labels, k = _axis_labels(columns, s.shape[1], units), min(s.shape[1], max_columns)
    upper = (s, MODEL_COLOR)
    lower = upper if d is None else (d, DATA_COLOR)
    diagonal = [upper] if d is None else [lower, upper]
    spans = [_span(np.concatenate([pts[:, j] for pts, _ in diagonal])) for j in range(k)]
    fig, axes = _figure(k, k, k * PANEL_INCHES, k * PANEL_INCHES + 0.6)
    for i in range(k):
        for j in range(k):
            ax = axes[i][j]
            if i == j:
                _histograms(ax, diagonal, j, spans[j])
            else:
                pts, color = lower if i > j else upper
                _scatter(ax, pts, color, (spans[j], spans[i]), cols=(j, i), square=False)
            ax.set_xlabel(labels[j] if i == k - 1 else "")
            ax.set_ylabel(labels[i] if j == 0 else "")
            # y values on the left, but row 0's on the right: its left panel is a histogram
            ax.tick_params(labelbottom=i == k - 1, labelleft=j == 0 and i > 0, labelright=i == 0 and j == k - 1)
    what = (f"model samples (n = {len(s)})" if d is None else
            f"data below the diagonal (n = {len(d)}), model samples above (n = {len(s)})")
    more = f", first {k} of {s.shape[1]} columns" if s.shape[1] > k else ""
    notes = _non_finite_note(s[:, :k], " ")
    fig.suptitle(f"{title or ('model samples' if d is None else 'model samples over data')}\n{what}{more}{notes}")
    return _save(fig, path)


def _histograms(ax, clouds, j: int, span) -> None:
    """Density histograms of column j of each (points, color) over span, sharing their bins, the first filled and
    the others outlined; no y ticks (densities are not on the row's scale)."""
    bins = np.linspace(*span, 41)
    for k, (pts, color) in enumerate(clouds):
        v = pts[:, j]
        ax.hist(v[np.isfinite(v)], bins=bins, density=True, color=color, **(
            {"alpha": 0.5} if k == 0 else {"histtype": "step", "lw": 1.5}))
    ax.set_xlim(span)
    ax.set_yticks([])
    ax.grid(alpha=0.25)


def _states(states, name: str, T: float) -> list[tuple[float, np.ndarray]]:
    """A list of (t, points) pairs checked: scalar t in [0, T] and each points an (N, D) cloud."""
    out = []
    for i, item in enumerate(states):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise InputError(f"{name}[{i}] must be a pair (t, points (N, D)), got {item!r:.60}")
        t = _array(item[0], f"{name}[{i}] t")
        if t.ndim != 0 or not 0 <= t <= T:
            raise InputError(f"{name}[{i}] has t = {t}, expected a number in [0, T = {T:g}]")
        out.append((float(t), _points(item[1], f"{name}[{i}] points")))
    return out


def chain_strip(forward, backward, T, path, columns=None, units=None, title=None) -> Path:
    """Forward marginals q(x_t) (data -> noise) above the sampler's states (noise -> data), the first two columns,
    named by ``columns`` in ``units`` (module doc)."""
    T = float(T)
    fwd = sorted(_states(forward, "forward", T), key=lambda p: p[0])
    bwd = sorted(_states(backward, "backward", T), key=lambda p: -p[0])
    rows = [r for r in [("forward  $q(x_t \\mid x_0)$", DATA_COLOR, fwd),
                        ("backward  $p_\\theta$", MODEL_COLOR, bwd)] if r[2]]
    if not rows:
        raise InputError("chain_strip needs at least one (t, points) state, got none")
    clouds = [pts for _, pts in fwd + bwd]
    labels = _axis_labels(columns, clouds[0].shape[1], units)
    lims, ncols = _limits(clouds), max(len(states) for *_, states in rows)
    fig, axes = _figure(len(rows), ncols, ncols * PANEL_INCHES, len(rows) * PANEL_INCHES + 0.5,
                        sharex=True, sharey=True)
    for axrow, (label, color, states) in zip(axes, rows):
        for ax in axrow[len(states):]:
            ax.set_visible(False)
        for ax, (t, pts) in zip(axrow, states):
            name = "data" if t == 0 and states is fwd else f"t = {t:g}"
            ax.set_title(name + _scatter(ax, pts, color, lims), fontsize="medium")
            ax.set_xlabel(labels[0])
            ax.label_outer()
        axrow[0].set_ylabel(f"{label}\n{labels[1]}", fontsize="large")
    fig.suptitle((title or f"diffusion chain over T = {T:g} steps") + _dims_note(clouds[0].shape[1]))
    return _save(fig, path)


def _ema(y: np.ndarray) -> tuple[np.ndarray, int]:
    """Bias-corrected exponential moving average of `y` over a span of ~2% of its length."""
    span = max(1, len(y) // 50)
    beta = 1 - 1 / span
    acc, weight, out = 0.0, 0.0, np.empty_like(y)
    for i, v in enumerate(y):
        acc, weight = beta * acc + (1 - beta) * v, beta * weight + (1 - beta)
        out[i] = acc / weight
    return out, span


def loss_curve(steps, losses, path, lrs=None) -> Path:
    """Training loss against step (raw and smoothed, log y when positive), lr on a twin axis."""
    x = _vector(steps, "steps")
    y = _vector(losses, "losses", len(x))
    lr = None if lrs is None else _vector(lrs, "lrs", len(x))
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        raise InputError("losses has no finite value to plot")
    smooth, span = _ema(y[ok])
    fig, [[ax]] = _figure(1, 1, 7, 4)
    ax.plot(x[ok], y[ok], color=DATA_COLOR, alpha=0.3, lw=0.8, label="loss")
    ax.plot(x[ok], smooth, color=DATA_COLOR, lw=2, label=f"EMA (span {span})")
    ax.set_yscale("log" if (y[ok] > 0).all() else "linear")
    ax.set(xlabel="step", ylabel="loss", title="training loss")
    ax.grid(alpha=0.25, which="both")
    handles = list(ax.get_lines())
    if lr is not None:
        ax2 = ax.twinx()
        handles += ax2.plot(x, lr, color=LR_COLOR, lw=1.2, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate", color=LR_COLOR)
        ax2.tick_params(axis="y", colors=LR_COLOR)
    ax.legend(handles=handles, loc="upper right", fontsize="small")
    return _save(fig, path)


def metric_curves(x, series, path, xlabel, ylabel, logy=False, logx=False, title=None) -> Path:
    """One line per named series of y against the shared x (e.g. distance vs NFE)."""
    xs = _vector(x, "x")
    if not series:
        raise InputError("series must name at least one curve, got none")
    ys = {name: _vector(y, f"series[{name!r}]", len(xs)) for name, y in series.items()}
    fig, [[ax]] = _figure(1, 1, 6, 4)
    for name, y in ys.items():
        ax.plot(xs, y, marker="o", ms=3.5, lw=1.5, label=str(name))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title or f"{ylabel} vs {xlabel}",
           xscale="log" if logx else "linear", yscale="log" if logy else "linear")
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def sweep_curves(curves, floor_mean, floor_sd, path, ylabel="SW2", title=None) -> Path:
    """A distance against the actual NFE, one line per sampler (log-log; each has its own NFEs), over the
    Monte Carlo floor (the same distance between true sets: mean line, mean +- sd band)."""
    if not curves:
        raise InputError("curves must name at least one sampler, got none")
    lines = {}
    for name, (nfe, y) in curves.items():
        x = _vector(nfe, f"curves[{name!r}] NFE")
        lines[name] = (x, _vector(y, f"curves[{name!r}] values", len(x)))
    mean, sd = float(floor_mean), float(floor_sd)
    if not (np.isfinite(mean) and mean > 0 and np.isfinite(sd) and sd >= 0):
        raise InputError(f"the floor needs a positive mean and an sd >= 0, got {mean} and {sd}")
    fig, [[ax]] = _figure(1, 1, 6.5, 4.2)
    ax.axhspan(max(mean - sd, mean / 10), mean + sd, color="0.88", label="floor (true vs true), mean ± sd")
    ax.axhline(mean, color="0.55", lw=1, ls="--")
    for name, (x, y) in lines.items():
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)  # log axes: a diverged run is left out
        ax.plot(x[ok], y[ok], marker="o", ms=3.5, lw=1.5, label=str(name))
    ax.set(xscale="log", yscale="log", xlabel="NFE (denoiser calls)", ylabel=ylabel,
           title=title or f"{ylabel} to held-out data vs NFE")
    ax.grid(alpha=0.25, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def nll_histogram(nll, dim: int, path, title=None) -> Path:
    """Histogram of per-sample negative log-likelihoods in nats, the mean marked; bits/dim on the top axis."""
    y = _vector(nll, "nll")
    ok = np.isfinite(y)
    if not ok.any():
        raise InputError("nll has no finite value to plot")
    per_bit = dim * np.log(2)  # nats per bit/dim
    fig, [[ax]] = _figure(1, 1, 6, 4)
    ax.hist(y[ok], bins=int(np.clip(np.sqrt(ok.sum()), 5, 60)), color=DATA_COLOR, alpha=0.8)
    mean = y[ok].mean()
    ax.axvline(mean, color=MODEL_COLOR, lw=2, label=f"mean {mean:.4g} nats = {mean / per_bit:.4g} bits/dim")
    ax.secondary_xaxis("top", functions=(lambda v: v / per_bit, lambda b: b * per_bit)).set_xlabel("bits/dim")
    note = f" ({(~ok).sum()} non-finite not shown)" if not ok.all() else ""
    ax.set(xlabel="negative log-likelihood per sample (nats)", ylabel="samples",
           title=(title or "negative log-likelihood") + note)
    ax.grid(alpha=0.25)
    ax.legend(fontsize="small")
    return _save(fig, path)


def elbo_terms(per_t, path, title=None) -> Path:
    """The bound's mean terms against t (nats, log y): L_{t-1} for t >= 2 and the decoder's L_0 at t = 1 (drawn
    where positive), with the cumulative share of sum L_{t-1} up to t on a twin axis (which steps carry the bits)."""
    y = _vector(per_t, "per_t")
    if y.size < 2:
        raise InputError(f"per_t needs the terms of at least two steps (t = 1, 2, ...), got {y.size}")
    t, kl = np.arange(2, y.size + 1), y[1:]
    ok = np.isfinite(kl) & (kl > 0)  # log axis; KL terms are >= 0
    if not ok.any():
        raise InputError("per_t has no positive finite term L_{t-1} (t >= 2) to plot")
    fig, [[ax]] = _figure(1, 1, 7, 4)
    handles = ax.plot(t[ok], kl[ok], color=DATA_COLOR, lw=1.5, label="$L_{t-1}$ (KL), t ≥ 2")
    decoder = f"$L_0$ (decoder) = {y[0]:.3g} nats"
    if np.isfinite(y[0]) and y[0] > 0:
        handles += ax.plot([1], [y[0]], "o", color=MODEL_COLOR, label=decoder)
    else:  # a density's L_0 can be <= 0: not on a log axis
        handles += ax.plot([], [], " ", label=decoder + " (not drawn)")
    ax.set(xlabel="t", ylabel="nats per data point", yscale="log", title=title or "bound terms vs t")
    ax.grid(alpha=0.25, which="both")
    share = np.cumsum(np.where(np.isfinite(kl), kl, 0.0))
    ax2 = ax.twinx()
    handles += ax2.plot(t, share / share[-1], color=LR_COLOR, lw=1.2, ls="--", label="cumulative share of Σ $L_{t-1}$")
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("share of Σ $L_{t-1}$ up to t", color=LR_COLOR)
    ax2.tick_params(axis="y", colors=LR_COLOR)
    ax.legend(handles=handles, loc="center right", fontsize="small")
    return _save(fig, path)
