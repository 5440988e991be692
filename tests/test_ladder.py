"""The language ladder: rungs in ladder order, the measured direction of each exponent, separated intervals."""
from __future__ import annotations

from sweepjax.analysis import ladder as L


def row(source, alpha, ci, fitted=False, **extra):
    return {"slice": {"source": source, **extra}, "alpha": alpha, "alpha_ci": ci, "floor_fitted": fitted,
            **({"E": 1.5, "E_ci": [1.4, 1.6]} if fitted else {})}


def summary(n, d):
    return {"n_scaling": n, "d_scaling": d}


def test_rungs_follow_the_ladder_and_the_direction_is_measured():
    n = [row("corpus", 0.20, [0.18, 0.22], fitted=True), row("sampled:depth=4", 0.30, [0.25, 0.35]),
         row("bigram", 0.60, [0.55, 0.65]), row("sampled:depth=1", 0.50, [0.45, 0.52]),
         row("sampled:depth=2", 0.40, [0.33, 0.48])]
    d = [row(r["slice"]["source"], a, None) for r, a in zip(n, [0.1, 0.2, 0.3, 0.25, 0.15])]
    lad = L.ladder(summary(n, d))
    (g,) = lad["ladders"]
    assert g["order"] == ["bigram", "sampled:depth=1", "sampled:depth=2", "sampled:depth=4", "corpus"]
    assert [r["source"] for r in lad["rungs"]] == g["order"]
    assert g["alpha_N"]["direction"] == "falling"
    assert g["alpha_N"]["separated"] == [True, False, False, True]
    assert g["alpha_D"]["direction"] == "not monotone" and g["alpha_D"]["separated"] == [None] * 4
    corpus = lad["rungs"][-1]
    assert corpus["floor"] == "fitted" and corpus["E_ci"] == [1.4, 1.6] and lad["rungs"][0]["floor"] == "exact"
    assert lad["rungs"][1]["floor"] == "sampled"   # the generator's entropy: an estimate, not an exact floor
    text = L.describe(lad)
    assert "alpha_N along the ladder: falling; intervals separate 2 of 4" in text and "floor fitted E = 1.500" in text


def test_no_source_dim_means_no_ladder_and_other_dims_keep_rungs_apart():
    assert L.ladder(summary([{"slice": {"bias": 0.0}, "alpha": 0.5, "alpha_ci": None}], [])) is None
    n = [row("bigram", 0.5, None, seed_set="a"), row("corpus", 0.4, None, fitted=True, seed_set="a"),
         row("bigram", 0.3, None, seed_set="b")]
    lad = L.ladder(summary(n, []))
    assert [r["slice"].get("seed_set") for r in lad["rungs"]] == ["a", "a", "b"]
    a, b = lad["ladders"]   # one ladder per value of the other dim, each with its own direction
    assert a["slice"] == {"seed_set": "a"} and a["order"] == ["bigram", "corpus"] and b["order"] == ["bigram"]
    assert a["alpha_N"]["direction"] == "unknown" == b["alpha_N"]["direction"]   # fewer than three rungs


def test_a_missing_rung_makes_the_ladder_incomplete_and_selectors_rank_by_depth():
    """A rung without an exponent is not skipped over (bigram -> T2L would otherwise read as a trend); depth is
    read from any spelling of the selector."""
    n = [row("bigram", 0.5, None), row("sampled:depth=1", None, None), row("sampled: model.depth = 2", 0.3, None),
         row("corpus", 0.2, None, fitted=True)]
    lad = L.ladder(summary(n, []))
    (g,) = lad["ladders"]
    assert g["order"] == ["bigram", "sampled:depth=1", "sampled: model.depth = 2", "corpus"]
    assert g["alpha_N"]["direction"] == "incomplete"
    assert L.rung_rank("sampled:model.depth=4") > L.rung_rank("sampled:depth=2") > L.rung_rank("sampled:depth=1")


def test_the_figure_keeps_ladders_of_other_dims_apart(tmp_path):
    n = [row(src, a, [a - 0.05, a + 0.05], fitted=src == "corpus", context=c)
         for c in (8, 16) for src, a in (("bigram", 0.6), ("sampled:depth=2", 0.4), ("corpus", 0.3))]
    path = L.plot_ladder(L.ladder(summary(n, n)), tmp_path / "ladder.png")
    assert path.stat().st_size > 10_000


def test_an_unidentified_exponent_is_flagged_and_left_out_of_the_direction():
    n = [row(s, a, None) for s, a in (("bigram", 0.3), ("sampled:depth=1", 0.4), ("corpus", 0.5))]
    d = [row(s, a, None) for s, a in (("bigram", 0.7), ("sampled:depth=1", 0.8), ("corpus", 0.9))]
    d[1]["unidentified"] = True
    (g,) = L.ladder(summary(n, d))["ladders"]
    assert g["alpha_N"]["direction"] == "rising" and g["alpha_D"]["direction"] == "incomplete"
    text = L.describe(L.ladder(summary(n, d)))
    assert "alpha_D 0.800 (no interval) (NOT IDENTIFIED)" in text and text.count("NOT IDENTIFIED") == 1
