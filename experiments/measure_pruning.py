"""Does pruning cut NCF's tuning time? The same study with and without the median pruner.

Both studies use ``experiments/ncf.yaml`` (same data, inner validation split, search space and
sampler seed, so TPE's random start-up trials propose the same parameters), in one process, one
after the other, in fresh SQLite files. Printed: trials per state, the pruned share, each study's
wall-clock seconds and their ratio, the best validation NDCG@10, and the test NDCG@10 of each
study's best parameters refit on train + validation (pruning should save time, not quality).

    python experiments/measure_pruning.py --home /tmp/tune-ml --trials 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from features.workspace import Workspace  # noqa: E402
from training.evaluate import fit_and_score  # noqa: E402
from training.spec import load_experiment_spec  # noqa: E402
from training.tune.splits import prepare_data  # noqa: E402
from training.tune.study import optimize_trials  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "experiments/ncf.yaml")
    parser.add_argument("--trials", type=int, default=12, help="trials per study")
    parser.add_argument("--home", type=Path, default=None, help="workspace (data cache)")
    parser.add_argument("--pruner", default="median", help="the pruner to compare with none")
    args = parser.parse_args(argv)

    ws = Workspace.from_env(args.home).ensure()
    spec = load_experiment_spec(args.spec)
    data = prepare_data(spec, ws)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in (args.pruner, "none"):
            variant = spec.model_copy(update={"pruner": pruner, "name": f"{spec.name}-{pruner}"})
            storage = f"sqlite:///{Path(tmp) / pruner}.db"
            summary = optimize_trials(variant, data, storage, args.trials)
            started = time.perf_counter()
            test = fit_and_score(
                spec.model, {**spec.params, **summary.best_params}, data.test, spec.k
            ).metrics
            rows[pruner] = (summary, test[spec.metric], time.perf_counter() - started)
            print(
                f"{pruner:9s} complete {summary.n_complete:2d} pruned {summary.n_pruned:2d} "
                f"failed {summary.n_failed} | {summary.seconds:7.1f} s | best validation "
                f"{spec.metric} {summary.best_value:.4f} | test {test[spec.metric]:.4f} "
                f"| best {summary.best_params}",
                flush=True,
            )
    pruned, full = rows[args.pruner][0], rows["none"][0]
    share = pruned.n_pruned / args.trials
    print(
        f"\n{spec.model}, {args.trials} trials per study: pruned-trial share {share:.0%} "
        f"({pruned.n_pruned}/{args.trials}); wall-clock with {args.pruner} / without: "
        f"{pruned.seconds:.1f} s / {full.seconds:.1f} s = {pruned.seconds / full.seconds:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
