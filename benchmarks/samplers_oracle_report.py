"""Markdown tables and the issue-4 targets from the result files of samplers_oracle.py and sampler_overhead.py.

diffusers' methods ran in two variants (sampler_methods.py: its defaults, and the settings matching ours); every
comparison takes the better of the two per method and cell (lower within-mode std error), and the tables show both.
Rows written before the variants existed ran the matched settings (trailing spacing) and count as "matched".
"""

from __future__ import annotations

import json
from pathlib import Path

from provenance import commit_line

TARGET_STD_VS_DIFFUSERS = 0.5  # at 10 NFE: our best within-mode std error <= 0.5 x diffusers' best
TARGET_STD_VS_FLOOR = 2.0  # at 20 NFE: <= 2 x its Monte Carlo floor
TARGET_TV_VS_FLOOR = 1.5  # at 10 NFE
TARGET_OVERHEAD = 0.5  # our per-step overhead <= 0.5 x diffusers' for the same method


# gaussdiff's samplers and the diffusers methods that implement the same solver (with and without Karras sigmas)
SAME_METHOD = {"ddpm": ("DDPM",), "ddim": ("DDIM",), "euler": ("Euler", "Euler karras"),
               "heun": ("Heun", "Heun karras"), "dpmpp_2m": ("DPMSolverMultistep 2M", "DPMSolverMultistep 2M karras"),
               "dpmpp_3m": ("DPMSolverMultistep 3M", "DPMSolverMultistep 3M karras")}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _variant(row: dict) -> str | None:
    """A diffusers row's variant (rows from before the variants ran the matched settings); None for the others."""
    return row.get("variant") or ("matched" if row["side"] == "diffusers" else None)


def _name(row: dict) -> str:
    """The method, with its variant where it has two."""
    variant = _variant(row)
    return row["method"] + (f" ({variant})" if variant in ("defaults", "matched") else "")


def _better(rows: list[dict]) -> dict | None:
    """The row with the lowest within-mode std error (rows without one, NaN or errors, lose)."""
    scored = [r for r in rows if "std_err" in r]
    return min(scored, key=lambda r: r["std_err"]) if scored else (rows[0] if rows else None)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _cell(row: dict | None, key: str = "std_err") -> str:
    if row is None:
        return ""
    if "error" in row:
        return "error"
    if row["nan"]:
        return "NaN"
    text = f"{row[key]:.3f}" if key in row else ""
    if key == "std_err" and row["nfe"] != row["nfe_target"]:
        text += f" ({row['nfe']})"
    return text


def _ranges(steps: list[int], most: int = 8) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'; past ``most`` ranges, the first ones and the count."""
    out, start = [], None
    for i, k in enumerate(steps):
        if start is None:
            start = k
        if i + 1 == len(steps) or steps[i + 1] != k + 1:
            out.append(str(start) if start == k else f"{start}-{k}")
            start = None
    return ", ".join(out) if len(out) <= most else ", ".join(out[:most]) + f", ... ({len(steps)} counts)"


class Results:
    def __init__(self, rows: list[dict]):
        self.meta = next((r for r in rows if r["kind"] == "meta"), {})
        self.end = next((r for r in rows if r["kind"] == "end"), {})
        self.floor = {(r["problem"], r["n"]): r for r in rows if r["kind"] == "floor"}
        self.sw2_floor = {r["problem"]: r for r in rows if r["kind"] == "sw2_floor"}
        self.cells = [r | {"variant": _variant(r)} for r in rows if r["kind"] == "cell"]
        self.nfes = sorted({r["nfe_target"] for r in self.cells if r["nfe_target"] is not None})
        self.blocks = list(dict.fromkeys((r["problem"], r["schedule"]) for r in self.cells))

    def methods(self, block, side=None) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.cells if (r["problem"], r["schedule"]) == block
                                  and r["side"] != "reference" and (side is None or r["side"] == side)))

    def variants(self, block, method, nfe) -> list[dict]:
        """The rows of one method and cell, one per variant (defaults before matched)."""
        rows = [r for r in self.cells if (r["problem"], r["schedule"]) == block and r["method"] == method
                and r["nfe_target"] == nfe]
        return sorted(rows, key=lambda r: r["variant"] != "defaults")

    def get(self, block, method, nfe, variant: str | None = None) -> dict | None:
        """The row of one method and cell: of ``variant``, or the better variant when None."""
        rows = self.variants(block, method, nfe)
        if variant is not None:
            return next((r for r in rows if r["variant"] == variant), None)
        return _better(rows)

    def best(self, block, side, nfe) -> dict | None:
        ok = [r for m in self.methods(block, side) if (r := self.get(block, m, nfe)) and "std_err" in r]
        return min(ok, key=lambda r: r["std_err"], default=None)


def _floor_table(res: Results) -> list[str]:
    lines = ["| problem | n | within-mode std error | std bias | mode-weight TV | draws |", "|---|---|---|---|---|---|"]
    for (problem, n), r in res.floor.items():
        lines.append(f"| {problem} | {n} | " + " | ".join(f"{r[k]['mean']:.4f} ± {r[k]['sd']:.4f}"
                                                       for k in ("std_err", "std_bias", "tv")) + f" | {r['draws']} |")
    for problem, r in res.sw2_floor.items():
        lines.append(f"| {problem} | {r['n']} | SW2 (two fresh sets): {r['sw2']['mean']:.4f} ± {r['sw2']['sd']:.4f} "
                     f"| | | {r['draws']} |")
    return lines


def _both_cell(rows: list[dict]) -> str:
    """One variant's cell, or "defaults / matched" with the better one (the one compared) in bold."""
    if len(rows) < 2:
        return _cell(rows[0] if rows else None)
    best = _better(rows)
    return " / ".join(f"**{_cell(r)}**" if r is best and "std_err" in r else _cell(r) for r in rows)


def _std_table(res: Results, block) -> list[str]:
    problem, _ = block
    lines = ["| method | " + " | ".join(f"NFE {n}" for n in res.nfes) + " |", "|---|" + "---|" * len(res.nfes)]
    for m in res.methods(block):
        lines.append(f"| {m} | " + " | ".join(_both_cell(res.variants(block, m, n)) for n in res.nfes) + " |")
    floors = " | ".join(f"{res.floor[(problem, r['n'])]['std_err']['mean']:.3f}"
                        for r in (res.get(block, res.methods(block)[0], n) for n in res.nfes))
    lines.append(f"| *floor (true samples, same n)* | {floors} |")
    return lines


def _detail_table(res: Results, block) -> list[str]:
    problem, _ = block
    tv, sw2 = res.floor[(problem, res.meta["n"])]["tv"], res.sw2_floor.get(problem, {}).get("sw2")
    lines = ["| method | std err @10 | std bias @10 | TV @10 | TV @20 | SW2 @10 | SW2 @20 |",
             "|---|---|---|---|---|---|---|"]
    for m, variant in dict.fromkeys((r["method"], r["variant"]) for r in res.cells
                                    if (r["problem"], r["schedule"]) == block and r["side"] != "reference"):
        r10, r20 = res.get(block, m, 10, variant), res.get(block, m, 20, variant)
        shown = _name(r10 or r20) if (r10 or r20) else m
        lines.append(f"| {shown} | {_cell(r10)} | {_cell(r10, 'std_bias')} | {_cell(r10, 'tv')} | {_cell(r20, 'tv')} | "
                     f"{_cell(r10, 'sw2')} | {_cell(r20, 'sw2')} |")
    sw2_text = f"{sw2['mean']:.4f} ± {sw2['sd']:.4f}" if sw2 else "-"
    lines.append(f"| *floor (mean ± sd)* | | | {tv['mean']:.4f} ± {tv['sd']:.4f} | | {sw2_text} | |")
    return lines


def _reference_table(res: Results, block) -> list[str]:
    refs = [r for r in res.cells if (r["problem"], r["schedule"]) == block and r["side"] == "reference"]
    lines = ["| reference | NFE | std err | std bias | TV | SW2 | seconds |", "|---|---|---|---|---|---|---|"]
    for r in refs:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | | |")
        else:
            lines.append(f"| {r['method']} | {r['nfe']} | {_cell(r)} | {_cell(r, 'std_bias')} | {_cell(r, 'tv')} | "
                         f"{_cell(r, 'sw2')} | {r['seconds']:.1f} |")
    return lines if refs else []


def _same_method_table(res: Results, block) -> list[str]:
    """Per solver and NFE: our best grid against diffusers' best (of its variants, with and without Karras sigmas),
    within-mode std error, and their ratio."""
    lines = ["| solver | " + " | ".join(f"NFE {n}" for n in res.nfes) + " |", "|---|" + "---|" * len(res.nfes)]
    for ours, theirs in SAME_METHOD.items():
        cells = []
        for n in res.nfes:
            a = _better([r for m in res.methods(block, "gaussdiff") if m.startswith(ours + " (")
                         if (r := res.get(block, m, n))])
            b = _better([r for m in theirs if (r := res.get(block, m, n))])
            ok = a is not None and b is not None and "std_err" in a and "std_err" in b
            cells.append(f"{a['std_err']:.3f} / {b['std_err']:.3f} = {a['std_err'] / b['std_err']:.2f}" if ok else "")
        if any(cells):
            lines.append(f"| {ours} / {theirs[0]}{' (± karras)' if len(theirs) > 1 else ''} | " + " | ".join(cells)
                         + " |")
    return lines


def _targets(res: Results, robust: list[dict], overhead: list[dict]) -> list[str]:
    lines = ["| target | problem / schedule | ours | reference value | ratio | verdict |", "|---|---|---|---|---|---|"]
    for block in res.blocks:
        problem, sched = block
        ours, theirs = res.best(block, "gaussdiff", 10), res.best(block, "diffusers", 10)
        if ours and theirs:
            ratio = ours["std_err"] / theirs["std_err"]
            lines.append(f"| std err @10 NFE <= {TARGET_STD_VS_DIFFUSERS} x best diffusers | {problem} / {sched} | "
                         f"{ours['method']}: {ours['std_err']:.3f} | {_name(theirs)}: {theirs['std_err']:.3f} | "
                         f"{ratio:.2f} | {_verdict(ratio <= TARGET_STD_VS_DIFFUSERS)} |")
        for label, row, key, target, digits in [("std err @20 NFE", res.best(block, "gaussdiff", 20), "std_err",
                                                  TARGET_STD_VS_FLOOR, 3),
                                                 ("mode TV @10 NFE", ours, "tv", TARGET_TV_VS_FLOOR, 4)]:
            if row:
                fl = res.floor[(problem, row["n"])][key]["mean"]
                ratio = row[key] / fl
                lines.append(f"| {label} <= {target} x floor | {problem} / {sched} | {row['method']}: "
                             f"{row[key]:.{digits}f} | floor {fl:.{digits}f} | {ratio:.2f} | "
                             f"{_verdict(ratio <= target)} |")
    for side in ("gaussdiff", "diffusers"):
        rows = [r for r in robust if r["side"] == side]
        if rows:
            bad = [r for r in rows if r["nan_steps"] or r["error_steps"] or r["collision_steps"] or r["extra_steps"]]
            steps = max(r["max_steps"] for r in rows)
            lines.append(f"| no NaN / exception / colliding or extra steps, steps 1..{steps}, both schedules | "
                         f"{side} | "
                         f"{len(rows) - len(bad)} of {len(rows)} method x schedule clean | | | "
                         f"{_verdict(not bad) if side == 'gaussdiff' else '(reference)'} |")
    for r in overhead:
        if r["kind"] == "summary":
            lines.append(f"| per-step overhead <= {TARGET_OVERHEAD} x diffusers | {r['method']}, batch {r['shape']} | "
                         f"{r['ours_us']:.0f} us | {r['diffusers_us']:.0f} us | {r['ratio']:.2f} | "
                         f"{_verdict(r['ratio'] <= TARGET_OVERHEAD)} |")
    return lines


def _robustness_table(robust: list[dict]) -> list[str]:
    """One row per method x schedule with a finding; the clean ones listed after the table."""
    lines = ["| method | schedule | NaN at | exceptions at | colliding steps at | extra steps at | runs | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    clean = []
    for r in robust:
        if not (r["nan_steps"] or r["error_steps"] or r["collision_steps"] or r["extra_steps"]):
            clean.append(f"{_name(r)} / {r['schedule']}")
            continue
        errors = "; ".join(f"{_ranges(ks)}: {msg}" for msg, ks in r["error_steps"].items())
        lines.append(f"| {_name(r)} | {r['schedule']} | {_ranges(r['nan_steps'])} | {errors} | "
                     f"{_ranges(r['collision_steps'])} | {_ranges(r['extra_steps'])} | {r['runs']} | "
                     f"{r['seconds']:.0f} |")
    return lines + ["", f"Clean at every step count ({len(clean)}): {', '.join(clean)}."]


def report(oracle: Path, robustness: Path, overhead: Path) -> str:
    rows = _rows(oracle)
    res = Results(rows)
    robust = [r for r in _rows(robustness) if r["kind"] == "robustness"]
    over = _rows(overhead)
    out = [f"{path.name}: {commit_line(found)}" for path, found in
           ((oracle, rows), (robustness, _rows(robustness)), (overhead, over)) if found] + [""]
    if res.meta:
        out += [f"Command: `{res.meta['command']}` — torch {res.meta['torch']}, diffusers {res.meta['diffusers']}, "
                f"{res.meta['threads']} threads, {res.meta['cpus']} CPUs; "
                f"total {res.end.get('seconds', 0) / 60:.1f} min, "
                f"cpu/wall {res.end.get('cpu_wall', 0):.2f}.", ""]
    out += ["#### Monte Carlo floors (true samples; mean ± sd over the draws)", "", *_floor_table(res), ""]
    for block in res.blocks:
        out += [f"#### {block[0]}, {block[1]} schedule: within-mode std error (mean |relative error| of the per-axis "
                "std; (k) = actual NFE where it differs; diffusers: its defaults / the variant matching ours, the "
                "better in bold)", "", *_std_table(res, block), "",
                f"#### {block[0]}, {block[1]} schedule: the same solver, our best grid / diffusers' best variant "
                "(within-mode std error) = ratio", "", *_same_method_table(res, block), "",
                f"#### {block[0]}, {block[1]} schedule: bias, mode weights and SW2 at 10 and 20 NFE", "",
                *_detail_table(res, block), ""]
        ref = _reference_table(res, block)
        out += [*ref, ""] if ref else []
    out += ["#### Targets", "", *_targets(res, robust, over), ""]
    if robust:
        meta = next(r for r in _rows(robustness) if r["kind"] == "meta")
        out += ["#### Robustness sweep (8 points of ring8)", "",
                f"Command: `{meta['command']}`, {meta['threads']} threads; steps checked at each of the "
                f"{robust[0]['max_steps']} step counts, a run (NaN, exceptions) at 1..20, every "
                f"{robust[0]['run_stride']}-th, the last 5 and wherever there are extra steps.", "",
                *_robustness_table(robust), ""]
    return "\n".join(out)
