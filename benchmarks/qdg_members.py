"""QDG on every widest member of the CPU quanta run (issue 13), with the ARI's chance level and baselines.

    python benchmarks/qdg_members.py     # after: sweepjax run configs/quanta_parity.toml --out runs/quanta_parity

Writes figures/quanta_parity_qdg_members.json (one row per member and gradient variant).
"""
import json
from sweepjax import results
from sweepjax.analysis import qdg as Q
ds = results.load("runs/quanta_parity")
rows = []
for z in ds.zipf_exponent.values.tolist():
    for s in ds.seed.values.tolist():
        for al in (False, True):
            r = Q.qdg(ds, member={"zipf_exponent": z, "seed": s}, align_labels=al)
            rows.append({"zipf_exponent": z, "seed": s, "align_labels": al, "kept": r.n_kept, "clusters": r.clusters,
                         "ari": r.ari, "null_mean": r.extra["ari_null_mean"], "null_sd": r.extra["ari_null_sd"],
                         "ari_inputs": r.extra["ari_inputs"], "ari_init_gradients": r.extra["ari_init_gradients"],
                         "slope": r.slope})
            print(json.dumps(rows[-1]))
json.dump(rows, open("figures/quanta_parity_qdg_members.json", "w"), indent=1)
