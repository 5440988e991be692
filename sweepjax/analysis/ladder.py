"""The language ladder (issue 15): every rung's scaling exponents side by side, in ladder order.

A ladder sweep is one ``text`` sweep over ``task.source``; the language analysis
(:mod:`sweepjax.analysis.language`) fits every rung as a slice (alpha_N at the largest D, alpha_D at the
largest N, intervals from the bootstrap over seeds; a rung without an exact floor, the corpus, with its
floor fitted). This module puts those rows in ladder order, from the simplest source to the text,

    bigram  <  sampled:<generator> (by the generator's depth: T1L, T2L, T4L)  <  corpus,

and says, as measured, whether each exponent moves monotonically along it and which neighbouring rungs
the intervals separate. Its output is the ``ladder`` entry of ``language.json`` and
``language_ladder.png``.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

EXPONENTS = (("alpha_N", "n_scaling"), ("alpha_D", "d_scaling"))


def rung_rank(source: str) -> float:
    """The position of ``source`` on the ladder: bigram 0, a sampled source 1 + its generator's depth (when its
    selector names one; else 1.5), the corpus last, anything else after it."""
    if source == "bigram":
        return 0.0
    if source.startswith("sampled:"):
        depth = re.search(r"(?:^|[:,])\s*(?:model\.)?depth\s*=\s*(\d+)", source)
        return 1.0 + (int(depth.group(1)) if depth else 0.5)
    return 1e9 if source == "corpus" else 2e9


def _direction(values: list[float | None]) -> str:
    """"rising", "falling", "not monotone" along the list, "incomplete" when a rung has no exponent (its
    neighbours are not compared across the gap), "unknown" with fewer than three rungs."""
    if any(x is None or not np.isfinite(x) for x in values):
        return "incomplete"
    v = list(values)
    if len(v) < 3:
        return "unknown"
    d = np.diff(v)
    return "rising" if np.all(d > 0) else "falling" if np.all(d < 0) else "not monotone"


def ladder(summary: dict) -> dict | None:
    """The ladder of a language summary (``summarize``'s dict or ``language.json``), or None when the results
    have no ``source`` slices. ``rungs``: one row per source in ladder order with ``alpha_N``/``alpha_D`` and
    their intervals, ``floor`` ("exact": the bigram chain's entropy rate; "sampled": the generator's mean
    predictive entropy over its pool, a Monte-Carlo estimate; "fitted": no known floor, the law's free term,
    a different estimator of alpha than the others') and, for a fitted floor, ``E``/``E_ci`` of the N law,
    and the notes of the fits; ``ladders``: one per value of the other slice dims (``slice``), with ``order``
    (its sources) and per exponent ``direction`` along the ladder and ``separated``: for each neighbouring
    pair, whether their intervals are disjoint (None without both). An exponent whose fit is not identified
    (``unidentified``: :data:`sweepjax.analysis.language.START_SPREAD_MAX`) is shown, flagged, and left out of
    the direction (then "incomplete")."""
    rows: dict[str, dict] = {}
    for name, kind in EXPONENTS:
        for r in summary.get(kind, []):
            source = (r.get("slice") or {}).get("source")
            if source is None:
                continue
            others = {k: v for k, v in r["slice"].items() if k != "source"}
            row = rows.setdefault(repr((source, sorted(others.items()))),
                                  {"source": source, "slice": r["slice"], "floor": None})
            row[name], row[f"{name}_ci"] = r.get("alpha"), r.get("alpha_ci")
            row[f"{name}_note"] = r.get("note") or r.get("ci_note") or ""
            row[f"{name}_unidentified"] = bool(r.get("unidentified"))
            if kind == "n_scaling":
                row["floor"] = ("fitted" if r.get("floor_fitted") else
                                "sampled" if source.startswith("sampled:") else "exact")
                if r.get("floor_fitted"):
                    row["E"], row["E_ci"] = r.get("E"), r.get("E_ci")
    if not rows:
        return None
    others = lambda r: sorted((k, str(v)) for k, v in r["slice"].items() if k != "source")
    rungs = sorted(rows.values(), key=lambda r: (others(r), rung_rank(r["source"]), r["source"]))
    groups = []
    for key in dict.fromkeys(repr(others(r)) for r in rungs):   # one ladder per value of the other slice dims
        members = [r for r in rungs if repr(others(r)) == key]
        group = {"slice": {k: v for k, v in members[0]["slice"].items() if k != "source"},
                 "order": [r["source"] for r in members]}
        for name, _ in EXPONENTS:
            ci = [r.get(f"{name}_ci") for r in members]
            group[name] = {"direction": _direction([None if r.get(f"{name}_unidentified") else r.get(name) for r in members]),
                           "separated": [None if not (a and b) else bool(a[1] < b[0] or b[1] < a[0])
                                         for a, b in zip(ci, ci[1:])]}
        groups.append(group)
    return {"rungs": rungs, "ladders": groups}


def describe(lad: dict | None) -> str:
    """Printable lines: each rung's exponents, then the measured direction along the ladder."""
    if not lad:
        return ""
    f = lambda v: "-" if v is None else f"{v:.3f}"
    ci = lambda c: f" [{f(c[0])}, {f(c[1])}]" if c else " (no interval)"
    lines = ["language ladder (simplest source first):"]
    for r in lad["rungs"]:
        floor = {"exact": "floor exact (entropy rate)", "sampled": "floor: the generator's entropy (Monte Carlo)"}.get(
            r["floor"], f"floor fitted E = {f(r.get('E'))}{ci(r.get('E_ci'))} (alpha from a free-floor law)")
        flag = lambda name: " (NOT IDENTIFIED)" if r.get(f"{name}_unidentified") else ""
        lines.append(f"  {r['source']}: alpha_N {f(r.get('alpha_N'))}{ci(r.get('alpha_N_ci'))}{flag('alpha_N')}, "
                     f"alpha_D {f(r.get('alpha_D'))}{ci(r.get('alpha_D_ci'))}{flag('alpha_D')}; {floor}")
    for g in lad["ladders"]:
        where = ", ".join(f"{k}={v}" for k, v in g["slice"].items())
        for name, _ in EXPONENTS:
            known = [s for s in g[name]["separated"] if s is not None]
            lines.append(f"  {name} along the ladder{f' ({where})' if where else ''}: {g[name]['direction']}; "
                         f"intervals separate {sum(known)} of {len(known)} neighbouring pairs with intervals")
    return "\n".join(lines)


def plot_ladder(lad: dict, path: Path) -> Path:
    """alpha_N and alpha_D of every rung with their intervals, rungs in ladder order."""
    from sweepjax.plots import plt, save
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    order = sorted(dict.fromkeys(r["source"] for r in lad["rungs"]), key=lambda src: (rung_rank(src), src))
    markers = {"exact": "o", "sampled": "D", "fitted": "s"}
    for ax, (name, _) in zip(axes, EXPONENTS):
        for gi, g in enumerate(lad["ladders"]):
            where = ", ".join(f"{k}={v}" for k, v in g["slice"].items())
            rows = [r for r in lad["rungs"] if {k: v for k, v in r["slice"].items() if k != "source"} == g["slice"]]
            shift = 0.08 * (gi - (len(lad["ladders"]) - 1) / 2)   # groups side by side at each rung
            for r in rows:
                v, c = r.get(name), r.get(f"{name}_ci")
                if v is None:
                    continue
                err = None if not c else [[max(v - c[0], 0)], [max(c[1] - v, 0)]]
                ax.errorbar([order.index(r["source"]) + shift], [v], yerr=err, fmt=markers[r["floor"]],
                            color="0.6" if r.get(f"{name}_unidentified") else f"C{gi}",
                            mfc=f"C{gi}" if c and not r.get(f"{name}_unidentified") else "white", capsize=4,
                            label=(where or None) if r is rows[0] and where else None)
        ax.set_xticks(range(len(order)), order, rotation=20, fontsize=8)
        ax.set_ylabel(name)
        ax.set_title(f"{name} along the ladder: " + "; ".join(g[name]["direction"] for g in lad["ladders"]),
                     fontsize=9)
        if len(lad["ladders"]) > 1:
            ax.legend(fontsize=7)
    fig.text(0.5, 0.005, "circle: exact floor (entropy rate); diamond: sampled (generator's entropy); square: floor "
             "fitted; open marker: no bootstrap interval; grey: fit not identified (left out of the direction)",
             ha="center", fontsize=7)
    return save(fig, path)
