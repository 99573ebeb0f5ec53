"""Benchmark Tailor's IALS and BPR against the `implicit` library on MovieLens-100K.

Every rating counts as one positive interaction. Each user's interactions are split 80/20 at
random (seeded); each model is fitted ``--repeats`` times in this process on the 80% and
evaluated on the 20% (NDCG@k, precision@k via `models.ranking_metrics.ranking_report`, training
items excluded). Printed: median fit seconds, the time ratio ours/implicit and the metrics.

Fairness: both sides run on the same number of threads (``--threads``, default 1): numpy/scipy
BLAS and OpenMP pools through threadpoolctl, torch through ``torch.set_num_threads`` and
`implicit` through ``num_threads``. `implicit`'s ALS multiplies its matrix by its ``alpha`` and
uses the product as the confidence, so it is given ``1 + alpha * r`` with ``alpha=1``: both then
minimize Hu et al.'s objective with ``c_ui = 1 + alpha * r_ui``.

Usage: ``python experiments/bench_implicit.py [--raw-dir /tmp/tailor-bench] [--repeats 3]``
(needs ``pip install implicit==0.7.3``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from features.datasets.load import load  # noqa: E402
from models.als import IALS, SERIAL_BELOW_NNZ, IALSConfig  # noqa: E402
from models.bpr import BPR, BPRConfig  # noqa: E402
from models.interactions import IdMap, Interactions  # noqa: E402
from models.ranking_metrics import ranking_report  # noqa: E402
from training import result_files  # noqa: E402

INSTALL_HINT = (
    "implicit is not installed; install it with\n"
    f"    {sys.executable} -m pip install implicit==0.7.3\n"
    "(check first with --dry-run that it leaves numpy and scipy as they are)"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    als, bpr = IALSConfig(), BPRConfig()
    parser = argparse.ArgumentParser(
        description="Time and score Tailor's IALS/BPR against implicit on MovieLens-100K.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--raw-dir", type=Path, default=Path("/tmp/tailor-bench"), help="data set cache folder"
    )
    parser.add_argument("--repeats", type=int, default=3, help="fits per model (median time)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both libraries")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the 80/20 split")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held out per user")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    parser.add_argument("--seed", type=int, default=42, help="model seed (both libraries)")
    parser.add_argument("--factors", type=int, default=64, help="latent factors (all models)")
    parser.add_argument("--iterations", type=int, default=15, help="ALS iterations")
    parser.add_argument(
        "--regularization", type=float, default=als.regularization, help="ALS L2 weight"
    )
    parser.add_argument("--alpha", type=float, default=als.alpha, help="ALS c = 1 + alpha * r")
    parser.add_argument("--bpr-epochs", type=int, default=bpr.epochs, help="BPR epochs")
    parser.add_argument(
        "--bpr-learning-rate", type=float, default=bpr.learning_rate, help="BPR SGD step"
    )
    parser.add_argument(
        "--bpr-regularization", type=float, default=bpr.regularization, help="BPR L2 weight"
    )
    parser.add_argument("--skip-bpr", action="store_true", help="benchmark ALS only")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the report as a Markdown table (e.g. "
        "experiments/results/implicit-comparison.md), its first line the command",
    )
    return parser.parse_args(argv)


def split_per_user(
    frame: pd.DataFrame, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out ``round(test_fraction * n_u)`` random interactions of every user ``u``."""
    user_codes, _ = pd.factorize(frame["user_id"])
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(frame)), user_codes))  # by user, random within a user
    counts = np.bincount(user_codes)
    sorted_codes = user_codes[order]
    rank = np.arange(len(frame)) - np.repeat(np.cumsum(counts) - counts, counts)
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[order] = rank < np.round(test_fraction * counts).astype(np.int64)[sorted_codes]
    return frame[~is_test], frame[is_test]


@dataclass
class Result:
    label: str
    seconds: list[float]
    metrics: dict[str, float]
    metrics_stable: bool  # identical metrics on every repeat

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run(
    label: str,
    repeats: int,
    fit: Callable[[], object],
    recommend: Callable[[object], np.ndarray],
    test: sp.csr_matrix,
    k: int,
) -> Result:
    """Fit ``repeats`` times (timing only the fit) and evaluate every fitted model."""
    seconds, reports = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        model = fit()
        seconds.append(time.perf_counter() - started)
        reports.append(ranking_report(recommend(model), test, test.shape[1], k))
    stable = all(report == reports[0] for report in reports)
    return Result(label, seconds, reports[-1], stable)


def recorded_command(args: argparse.Namespace, argv: list[str] | None) -> list[str]:
    """The command line as given (``--out`` shown as a command line shows it)."""
    given = list(sys.argv[1:] if argv is None else argv)
    if "--out" in given:
        given[given.index("--out") + 1] = result_files.shown(args.out)
    return result_files.script_command("experiments/bench_implicit.py", given)


def write_markdown(path: Path, command: list[str], report: list[str]) -> None:
    """The committed comparison: the command first, then the printed report, verbatim."""
    text = [
        result_files.generated_by(command),
        "",
        "# Tailor iALS / BPR against `implicit` on MovieLens-100K",
        "",
        f"Command: `{shlex.join(command)}` (needs `implicit`: see `--help`).",
        "",
        "```",
        *report,
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import implicit
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    import torch
    from threadpoolctl import threadpool_limits

    dataset = load("movielens-100k", args.raw_dir)
    frame = dataset.interactions[["user_id", "item_id"]]
    users, items = IdMap.from_ids(frame["user_id"]), IdMap.from_ids(frame["item_id"])
    train_frame, test_frame = split_per_user(frame, args.test_fraction, args.split_seed)
    train = Interactions.from_frame(train_frame, users=users, items=items)
    test = Interactions.from_frame(test_frame, users=users, items=items).matrix
    train_matrix = train.matrix  # all ones
    user_idx = np.arange(len(users))
    k = args.k

    torch.set_num_threads(args.threads)
    ials_threads = 1 if train_matrix.nnz < SERIAL_BELOW_NNZ else args.threads
    ials_config = IALSConfig(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        iterations=args.iterations,
        seed=args.seed,
    )
    bpr_config = BPRConfig(
        factors=args.factors,
        learning_rate=args.bpr_learning_rate,
        regularization=args.bpr_regularization,
        epochs=args.bpr_epochs,
        seed=args.seed,
    )
    confidence = train_matrix.copy()
    confidence.data = (1.0 + args.alpha * confidence.data).astype(np.float32)

    def ours_recommend(model: object) -> np.ndarray:
        return model.recommend(user_idx, train_matrix, k=k, exclude_seen=True)[0]

    def implicit_recommend(model: object) -> np.ndarray:
        ids, _ = model.recommend(user_idx, train_matrix, N=k, filter_already_liked_items=True)
        return np.asarray(ids, dtype=np.int64)

    def implicit_als() -> object:
        model = AlternatingLeastSquares(
            factors=args.factors,
            regularization=args.regularization,
            alpha=1.0,  # the matrix already holds 1 + alpha * r
            iterations=args.iterations,
            use_cg=True,
            num_threads=args.threads,
            random_state=args.seed,
        )
        model.fit(confidence, show_progress=False)
        return model

    def implicit_bpr() -> object:
        model = BayesianPersonalizedRanking(
            factors=args.factors,
            learning_rate=args.bpr_learning_rate,
            regularization=args.bpr_regularization,
            iterations=args.bpr_epochs,
            num_threads=args.threads,
            random_state=args.seed,
        )
        model.fit(train_matrix, show_progress=False)
        return model

    pairs: list[tuple[Result, Result]] = []
    with threadpool_limits(limits=args.threads):
        ours = run(
            "tailor IALS",
            args.repeats,
            lambda: IALS(ials_config).fit(train),
            ours_recommend,
            test,
            k,
        )
        theirs = run(
            "implicit ALS (use_cg)", args.repeats, implicit_als, implicit_recommend, test, k
        )
        pairs.append((ours, theirs))
        if not args.skip_bpr:
            ours = run(
                "tailor BPR",
                args.repeats,
                lambda: BPR(bpr_config).fit(train),
                ours_recommend,
                test,
                k,
            )
            theirs = run("implicit BPR", args.repeats, implicit_bpr, implicit_recommend, test, k)
            pairs.append((ours, theirs))

    lines: list[str] = []

    def say(line: str = "") -> None:
        """Print a line of the report and keep it for ``--out``."""
        print(line)
        lines.append(line)

    say(
        f"MovieLens-100K: {len(users)} users, {len(items)} items, {len(frame)} interactions "
        f"(every rating = 1); per-user random split seed {args.split_seed}: "
        f"train {train_matrix.nnz}, test {test.nnz}"
    )
    say(
        f"implicit {implicit.__version__}, torch {torch.__version__}, numpy {np.__version__}; "
        f"{args.repeats} fits per model in one process, time = median fit seconds"
    )
    say(
        f"Threads: threadpoolctl limits BLAS/OpenMP to {args.threads}; "
        f"torch.set_num_threads({args.threads}); implicit num_threads={args.threads}; "
        f"tailor IALS uses {ials_threads} torch thread(s) here "
        f"(one below {SERIAL_BELOW_NNZ:,} interactions), tailor BPR one"
    )
    say(
        f"ALS: factors={args.factors} regularization={args.regularization} alpha={args.alpha} "
        f"iterations={args.iterations} (implicit gets 1 + alpha*r with its alpha=1); "
        f"BPR: factors={args.factors} lr={args.bpr_learning_rate} "
        f"regularization={args.bpr_regularization} epochs={args.bpr_epochs}"
    )
    say(f"Metrics at k={k} on the test split, training items excluded")
    say()
    header = (
        f"{'model':<24}{'fit s (median)':>16}  {'fit s per run':<24}"
        f"{f'ndcg@{k}':>10}{f'precision@{k}':>15}"
    )
    say(header)
    say("-" * len(header))
    summary = []
    for ours, theirs in pairs:
        for result in (ours, theirs):
            runs = "/".join(f"{s:.2f}" for s in result.seconds)
            say(
                f"{result.label:<24}{result.median:>16.3f}  {runs:<24}"
                f"{result.metrics[f'ndcg_at_{k}']:>10.4f}"
                f"{result.metrics[f'precision_at_{k}']:>15.4f}"
                + ("" if result.metrics_stable else "  (metrics varied across runs)")
            )
        ratio = ours.median / theirs.median
        ndcg_ours, ndcg_theirs = ours.metrics[f"ndcg_at_{k}"], theirs.metrics[f"ndcg_at_{k}"]
        say(
            f"{'  ratio ours/implicit':<24}{ratio:>16.2f}  "
            f"ndcg@{k} ours - implicit = {ndcg_ours - ndcg_theirs:+.4f}"
        )
        summary.append(
            {
                "ours": ours.label,
                "implicit": theirs.label,
                "ours_seconds": ours.seconds,
                "implicit_seconds": theirs.seconds,
                "ratio": ratio,
                "ours_metrics": ours.metrics,
                "implicit_metrics": theirs.metrics,
            }
        )
    als_ours, als_theirs = pairs[0]
    ratio = als_ours.median / als_theirs.median
    ndcg_ok = als_ours.metrics[f"ndcg_at_{k}"] >= als_theirs.metrics[f"ndcg_at_{k}"]
    verdict = "PASS" if ratio <= 1.5 and ndcg_ok else "FAIL"
    say()
    say(
        f"ALS acceptance (time ratio <= 1.5 and ndcg@{k} >= implicit's): {verdict} "
        f"(ratio {ratio:.2f}, ndcg {'>=' if ndcg_ok else '<'} implicit)"
    )
    if not args.skip_bpr:
        say(
            "Note: implicit's BPR draws negatives in proportion to item popularity (a random "
            "interaction's item) and skips triples whose negative the user has; tailor's draws "
            "them uniformly and redraws (Rendle et al. 2009)."
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.out is not None:
        write_markdown(args.out, recorded_command(args, argv), lines)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
