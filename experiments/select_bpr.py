"""BPR: a second, wider candidate set chosen on the same inner validation split.

Run: python experiments/select_bpr.py  (prints validation NDCG@10 per candidate, the choice,
then the outer test NDCG@10 of the chosen config once).
Results: experiments/results/validation-selection.md.
"""

import time
from pathlib import Path

from features.datasets.load import movielens_file_order
from training.evaluate import fit_and_score
from training.protocols import msr_split, to_eval

frame = movielens_file_order(Path("/tmp/mlcache"))
outer = msr_split(frame, 0.75, 42)
inner = msr_split(outer.train, 0.75, seed=7)
ev_inner = to_eval(inner)
cands = [
    {"factors": 64, "learning_rate": 0.05, "epochs": 30, "regularization": 0.001},
    {"factors": 200, "learning_rate": 0.01, "epochs": 100, "regularization": 0.001},
    {"factors": 128, "learning_rate": 0.02, "epochs": 60, "regularization": 0.001},
    {"factors": 200, "learning_rate": 0.02, "epochs": 100, "regularization": 0.001},
]
best = None
for c in cands:
    t = time.time()
    scored = fit_and_score("bpr", c, ev_inner, 10, novelty=True)
    rep = scored.metrics
    print("valid", c, round(rep["ndcg_at_10"], 4), f"{scored.fit_seconds:.1f}s", flush=True)
    if best is None or rep["ndcg_at_10"] > best[1]:
        best = (c, rep["ndcg_at_10"])
print("chosen", best)
rep = fit_and_score("bpr", best[0], to_eval(outer), 10, novelty=True).metrics
print("TEST (once, after choosing)", round(rep["ndcg_at_10"], 4))
