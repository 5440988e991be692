"""Transformer family on the Markov task: padding invariance, causality, muP, counting, precision."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sweepjax.analysis.coordcheck import coordcheck_config, spread
from sweepjax.config import ConfigError, build_config
from sweepjax.run import run_sweep
from sweepjax.models import count, make_model

TASK = {"name": "markov", "vocab": 8, "context": 8, "batch_size": 8, "test_size": 16}


def config(sweep: dict, model: dict | None = None, train: dict | None = None, task: dict | None = None,
           combinations: bool = True, **sections):
    two_heads = {} if "head_size" in (model or {}) or "model.heads" in sweep else {"heads": 2}
    model = {"family": "transformer", "depth": 1, **two_heads, **(model or {})}
    raw = {"task": {**TASK, **(task or {})},
           "model": model,
           "train": {"steps": 12, "chunk_steps": 5, "lr": 1e-2, **(train or {})},
           "eval": {"points": 4}, "run": {"max_padding_waste": 0}, **sections, "sweep": sweep}
    return build_config(raw, combinations=combinations)


def run(sweep, **kw):
    return run_sweep(config(sweep, **kw), log=None)[0]


def jaxpr_matmul_flops(jaxpr) -> int:
    """2 x multiply-adds of every dot_general in a (closed) jaxpr, through scans and sub-jaxprs."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            a, b = (v.aval.shape for v in eqn.invars)
            out = math.prod(eqn.outvars[0].aval.shape)
            total += 2 * out * math.prod(a[i] for i in lc)
        for p in eqn.params.values():
            subs = p if isinstance(p, (list, tuple)) else [p]
            for sub in subs:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    n = inner if hasattr(inner, "eqns") else inner.jaxpr
                    total += jaxpr_matmul_flops(n) * (eqn.params["length"] if eqn.primitive.name == "scan" else 1)
    return total


def model_and_params(cfg, sizes, padded=None):
    """The group's flax module padded to ``padded`` (default: the member's own sizes) and its init params."""
    model = make_model(cfg, padded or sizes)
    s = {k: jnp.int32(v) for k, v in sizes.items()}
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, cfg.task.context), jnp.int32), s)["params"]
    return model, params, s


VARIANTS = [
    {"norm": "layernorm", "positions": "learned", "activation": "gelu"},
    {"norm": "rmsnorm", "positions": "rotary", "tie_embeddings": True, "parameterization": "mup",
     "depth_scaling": "inv_sqrt", "base_width": 8, "activation": "relu2"},
]


@pytest.mark.parametrize("model", VARIANTS, ids=["layernorm-learned-sp", "rmsnorm-rotary-tied-mup"])
def test_padding_invariance_width_heads_mlp_depth(model):
    """A (width 8, 2 heads, MLP x2, 1 layer) member alone equals it inside a sweep padded to width 48,
    4 heads of 24 dims, MLP 144 and 3 layers, in float32."""
    member = {"model.width": [8], "model.heads": [2], "model.mlp_ratio": [2], "model.depth": [1]}
    alone = run(member, model=model)
    padded = run({"model.width": [8, 48], "model.heads": [2, 4], "model.mlp_ratio": [2, 3], "model.depth": [1, 3]},
                 model=model)
    sel = dict(width=8, heads=2, mlp_ratio=2, depth=1)
    for k in ("train_loss", "test_loss"):
        a, b = alone[k].sel(**sel).values, padded[k].sel(**sel).values
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(b, a, rtol=2e-5, err_msg=k)
    big = padded["final_test_loss"].sel(width=48, heads=4, mlp_ratio=3, depth=3)
    assert not np.allclose(big, alone["final_test_loss"].sel(**sel))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_causality(positions):
    """Changing tokens after position t never changes the outputs at positions <= t (padded model too)."""
    cfg = config({}, model={"positions": positions}, task={"context": 12})
    sizes = {"width": 8, "depth": 2, "heads": 2, "head_dim": 4, "mlp_hidden": 16}
    padded = {"width": 16, "depth": 3, "heads": 4, "head_dim": 8, "mlp_hidden": 32}
    model, params, s = model_and_params(cfg, sizes, padded)
    tokens = jax.random.randint(jax.random.key(1), (3, 12), 0, 8)
    base = model.apply({"params": params}, tokens, s)
    for t in (0, 5, 10):
        changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 3) % 8)
        out = model.apply({"params": params}, changed, s)
        np.testing.assert_array_equal(np.asarray(out[:, : t + 1]), np.asarray(base[:, : t + 1]))
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("model", [
    {"norm": "layernorm", "positions": "learned"},
    {"norm": "rmsnorm", "positions": "rotary", "tie_embeddings": True, "head_size": 4},
], ids=["untied-learned", "tied-rotary-headsize"])
def test_counts_match_the_program(model):
    """Parameter counts equal the arrays of an unpadded model; forward FLOPs equal its jaxpr's matmuls."""
    cfg = config({}, model={**model, "mlp_ratio": 3}, task={"vocab": 11, "context": 6})
    sizes = {"width": 12, "depth": 2, "heads": 3, "head_dim": 4, "mlp_hidden": 36}
    model_, params, s = model_and_params(cfg, sizes)
    c = count(cfg, sizes)
    assert c["n_params"] == sum(p.size for p in jax.tree.leaves(params))
    embedding = params["embed"].size + (params["pos_embed"].size if "pos_embed" in params else 0)
    readout = params["readout"].size if "readout" in params else 0
    assert c["n_params_non_embedding"] == c["n_params"] - embedding - readout
    tokens = jnp.zeros((5, 6), jnp.int32)
    jaxpr = jax.make_jaxpr(lambda p: model_.apply({"params": p}, tokens, s))(params)
    assert jaxpr_matmul_flops(jaxpr.jaxpr) == c["forward_flops_per_token"] * tokens.size


@pytest.mark.parametrize("model, member, sweep", [
    ({"norm": "layernorm"}, dict(width=8, heads=1, mlp_ratio=1, depth=1),
     {"model.width": [8, 16], "model.heads": [1, 4], "model.mlp_ratio": [1, 4], "model.depth": [1, 3]}),
    ({"norm": "rmsnorm", "positions": "rotary", "parameterization": "mup", "base_width": 8, "head_size": 4},
     dict(width=4, mlp_ratio=4, depth=2), {"model.width": [4, 16], "model.mlp_ratio": [1, 4], "model.depth": [1, 2]}),
], ids=["one-head-ratio1-depth1-next-to-many", "head-size-mup-width4-ratio4"])
def test_padding_invariance_edges(model, member, sweep):
    """Edges of every transformer size axis: one head next to four, mlp_ratio 1 next to 4, depth 1
    next to 3, a one-head (head_size) width-4 member next to width 16; each equals the member alone."""
    alone = run({f"model.{k}": [v] for k, v in member.items()}, model=model)
    padded = run(sweep, model=model)
    for k in ("train_loss", "test_loss"):
        a, b = alone[k].sel(**member).values, padded[k].sel(**member).values
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(b, a, rtol=2e-5, err_msg=k)


@pytest.mark.parametrize("model", [
    {"heads": 2, "mlp_ratio": 2},
    {"head_size": 4, "mlp_ratio": 4, "base_mlp_ratio": 4, "positions": "rotary"},
], ids=["heads", "head-size-base-ratio"])
def test_mup_equals_sp_at_base_width(model):
    """At width == base_width muP and SP are the same model: same init, same losses step by step."""
    ds = run({"model.parameterization": ["sp", "mup"]},
             model={"width": 16, "base_width": 16, "norm": "layernorm", **model}, train={"steps": 8})
    for k in ("train_loss", "test_loss"):
        sp, mup = ds[k].sel(parameterization="sp").values, ds[k].sel(parameterization="mup").values
        np.testing.assert_allclose(mup, sp, rtol=1e-6, err_msg=k)
    # ... and differ off the base width (the test can see a difference)
    off = run({"model.parameterization": ["sp", "mup"]},
              model={"width": 32, "base_width": 16, "norm": "layernorm", **model}, train={"steps": 8})
    assert not np.allclose(off.train_loss.sel(parameterization="sp"), off.train_loss.sel(parameterization="mup"))


def test_mup_multipliers_follow_each_matrix_fan_in():
    """muP lr factors: q/k/v/w1 and the attention output by d_model / base, the MLP's second matrix by its
    own hidden width over the base model's; the attention scale by sqrt(d_base) / d_head."""
    from sweepjax.models.transformer import attention_scale, fan_in_multipliers
    cfg = config({}, model={"parameterization": "mup", "base_width": 16, "base_mlp_ratio": 1}).model
    sizes = {"width": 64, "heads": 8, "head_dim": 8, "mlp_hidden": 256}
    f = {k: float(v) for k, v in fan_in_multipliers(cfg, sizes).items()}
    assert f["wq"] == f["wk"] == f["wv"] == f["w1"] == f["wo"] == 4.0
    assert f["w2"] == 16.0  # 256 hidden units over the base model's 16 x 1
    # base head dim = base_width / heads = 2: scale sqrt(2) / 8
    assert float(attention_scale(cfg, sizes)) == pytest.approx(math.sqrt(2) / 8)
    same = config({}, model={"parameterization": "mup", "base_width": 16}).model  # base ratio = own ratio
    assert float(fan_in_multipliers(same, sizes)["w2"]) == 4.0
    sp = config({}, model={"parameterization": "sp"}).model
    assert float(attention_scale(sp, sizes)) == pytest.approx(1 / math.sqrt(8))
    assert all(float(v) == 1.0 for v in fan_in_multipliers(sp, sizes).values())


def test_mup_learning_rates_and_readout():
    """One Adam step moves hidden matrices by lr/m and embeddings by lr (m = width / base_width); SP: lr everywhere."""
    lr = 1e-2
    ds = run({"model.width": [8, 32], "model.parameterization": ["sp", "mup"]},
             model={"base_width": 8, "norm": "layernorm"}, train={"steps": 1, "chunk_steps": 1, "lr": lr},
             eval={"points": 1, "save_params": True})
    for p in ("sp", "mup"):
        for w in (8, 32):
            m = w / 8 if p == "mup" else 1.0
            sel = dict(width=w, parameterization=p)
            step = lambda name: float(np.nanmax(np.abs(ds[f"param.{name}"].sel(**sel).values
                                                       - ds[f"param.init.{name}"].sel(**sel).values)))
            for name in ("wq", "w1", "w2", "wo"):
                assert step(name) == pytest.approx(lr / m, rel=1e-3), (p, w, name)
            for name in ("embed", "readout", "ln1_gain"):
                assert step(name) == pytest.approx(lr, rel=1e-3), (p, w, name)


def test_coordinate_check_flat_under_mup_drifting_under_sp():
    """Across widths 16..256, hidden activation sizes after 4 Adam steps stay within 1.6x under muP;
    under SP the spread is over 3x muP's and grows with the steps."""
    raw = config({"model.width": [16, 32, 64, 128, 256], "seed": [0]},
                 model={"norm": "layernorm", "depth": 2, "head_size": 8, "mlp_ratio": 4, "base_width": 16},
                 task={"vocab": 16, "context": 8, "batch_size": 8, "test_size": 8}, combinations=False)
    ds = run_sweep(coordcheck_config(raw, 4), log=None)[0]
    first, last = spread(ds, 1), spread(ds)
    for probe in ("attn_out", "mlp_out", "residual"):
        mup, sp = float(last.sel(parameterization="mup", probe=probe)), float(last.sel(parameterization="sp", probe=probe))
        assert mup < 1.6, (probe, mup)
        assert sp > 3 * mup, (probe, sp, mup)
        assert sp > float(first.sel(parameterization="sp", probe=probe)), probe
    # the embedding is width-independent under both
    assert float(last.sel(probe="embed").max()) < 1.2


def test_markov_loss_approaches_entropy_rate():
    """A 1-layer width-32 transformer reaches within 0.03 nats of the chain's entropy rate; counts are stored."""
    ds = run({"seed": [0]}, model={"width": 32, "heads": 2}, train={"steps": 300, "chunk_steps": 300, "lr": 3e-3},
             task={"context": 16, "batch_size": 32, "test_size": 256})
    h = float(ds["irreducible_loss"])
    loss = float(ds["final_test_loss"].values[0])
    start = float(ds["test_loss"].isel(eval_step=0).values[0])
    assert start - h > 0.2  # it starts far away
    assert -0.01 < loss - h < 0.03, (loss, h)
    tokens = 300 * 32 * 16
    assert float(ds["tokens"].values[0]) == tokens
    n = float(ds["n_params_non_embedding"].values[0])
    assert float(ds["train_flops_6nd"].values[0]) == 6 * n * tokens
    assert float(ds["train_flops"].values[0]) > float(ds["train_flops_6nd"].values[0])  # readout + attention


def test_bf16_matmuls_train_like_float32():
    """bf16 matmuls (float32 params and Adam state) track the float32 run in absolute nats: within 2e-3
    nats, and within a tenth of the excess loss over the test set's Bayes loss (what a width fit fits)."""
    ds32 = run({"seed": [0, 1]}, model={"width": 16}, train={"steps": 60, "chunk_steps": 60})
    ds16 = run({"seed": [0, 1]}, model={"width": 16}, train={"steps": 60, "chunk_steps": 60, "precision": "bf16"})
    a, b = ds32["final_test_loss"].values, ds16["final_test_loss"].values
    assert not np.array_equal(a, b)  # really a different program
    excess = a - float(ds32["test_bayes_loss"])
    assert np.all(excess > 0.02)
    assert np.all(np.abs(b - a) < 2e-3), b - a
    assert np.all(np.abs(b - a) < 0.1 * excess), (b - a, excess)


@pytest.mark.parametrize("raw, message", [
    ({"model": {"family": "transformer"}}, "with task.name = 'regression-1d': this task trains the mlp family"),
    ({"task": {"name": "markov"}}, "with task.name = 'markov': this task trains the transformer family"),
    ({"model": {"family": "transformer", "width": 30}, "task": {"name": "markov"}}, "multiple of heads"),
    ({"model": {"family": "transformer", "head_size": 5}, "task": {"name": "markov"}}, "multiple of the head size"),
    ({"model": {"family": "transformer", "heads": 2, "positions": "rotary"}, "task": {"name": "markov"},
      "sweep": {"model.width": [12, 6]}}, "even head size"),
    ({"model": {"family": "transformer", "parameterization": "mup"}, "task": {"name": "markov"},
      "train": {"optimizer": "sgd"}}, "Adam ones"),
    ({"task": {"name": "markov", "sparsity": 1.0}, "model": {"family": "transformer"}}, "must be < 1"),
])
def test_transformer_config_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_transformer_too_big_for_memory_is_refused_before_compile():
    from sweepjax.run import check_memory
    cfg = config({"model.width": [64, 8192]}, model={"depth": 48, "head_size": 64},
                 task={"context": 2048, "batch_size": 64}, run={"max_padding_waste": 0, "memory_limit_gb": 1.0})
    with pytest.raises(ConfigError, match="width 8192, depth 48 needs"):
        check_memory(cfg)


def test_coordcheck_config_saves_a_config_the_engine_accepts(tmp_path):
    """The coordinate check turns the schedule constant; its saved config must not keep the schedule's
    keys (refused as no-ops), or `sweepjax plot`/reloading the results directory would fail."""
    from sweepjax.config import load_config, to_toml
    raw = config({"model.width": [16, 32]}, model={"base_width": 16},
                 train={"schedule": "warmup_cosine", "final_lr_fraction": 0.1, "warmup_fraction": 0.1},
                 combinations=False)
    cfg = coordcheck_config(raw, 3)
    (tmp_path / "config.toml").write_text(to_toml(cfg))
    again = load_config(tmp_path / "config.toml")
    assert again.train.schedule == "constant" and again.sweep["model.parameterization"] == ["sp", "mup"]
