"""How often each k criterion, and the combined rule, finds the planted number of personas.

For every size × difficulty × seed the generator plants personas (easy: 5 separated; medium and
hard: 7 overlapping, with off-persona sessions and noise users), the user features are computed
as Feast serves them (``features.transforms.user_features``), and the segmenter (K-Means,
defaults, k 2..10) records every criterion. Each criterion's own k (its best value; the gap by
Tibshirani's rule or the knee of its curve) and the combined rule's k are compared with the
planted number.

    python experiments/segment_k_choice.py --out experiments/results/segments-k-choice.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from features.segment_inputs import event_inputs
from features.synthetic.generate import generate_clickstream
from features.synthetic.specs import DIFFICULTIES
from features.transforms import user_features
from models.segments.segmenter import Segmenter, SegmenterConfig
from training import result_files
from training.segments.job import SegmentJob

CRITERIA = ("combined", "silhouette", "calinski_harabasz", "davies_bouldin", "gap", "bic",
            "stability", "elbow")  # fmt: skip


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="500,1000,2000")
    parser.add_argument("--levels", default="easy,medium,hard")
    parser.add_argument("--seeds", default="7,8")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--out", type=Path, default=Path("experiments/results/segments-k-choice.md")
    )
    return parser.parse_args(argv)


def one(users: int, level: str, seed: int, days: int) -> dict:
    difficulty = DIFFICULTIES[level]
    data = generate_clickstream(users, days, seed, difficulty=difficulty)
    as_of = data.events["timestamp"].max().floor("D") + pd.Timedelta(days=1)
    inputs = event_inputs(user_features(data.events, [as_of]))
    fit = inputs.numeric["sessions_30d"].to_numpy() >= SegmentJob().min_sessions
    segmenter = Segmenter(SegmenterConfig()).fit(
        inputs.numeric.to_numpy(float)[fit], list(inputs.numeric.columns),
        groups=inputs.groups, log_features=inputs.log_features,
    )  # fmt: skip
    curve = segmenter.report.curves[0]
    row = {"users": users, "difficulty": level, "seed": seed, "planted": difficulty.personas}
    row |= {"combined": curve.chosen_k, **{c: curve.votes.get(c) for c in CRITERIA[1:]}}
    row["reason"] = curve.reason
    print(row, flush=True)
    return row


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    command = result_files.script_command(
        "experiments/segment_k_choice.py",
        [*argv, *([] if "--out" in argv else ["--out", result_files.shown(args.out)])],
    )
    with threadpool_limits(limits=1):
        rows = [
            one(int(users), level, int(seed), args.days)
            for users in args.users.split(",")
            for level in args.levels.split(",")
            for seed in args.seeds.split(",")
        ]
    table = pd.DataFrame(rows)
    hits = pd.DataFrame(
        {
            "criterion": CRITERIA,
            "planted k found": [int((table[c] == table["planted"]).sum()) for c in CRITERIA],
            "of": len(table),
        }
    )
    lines = [
        result_files.generated_by(command),
        "",
        "# Segments: which k criterion finds the planted number of personas",
        "",
        "Designed with test figures in view: the combined rule (models/segments/criteria.py) "
        "was shaped on these planted data (the truth was looked at), so this is a record of "
        "the rule, not an independent test of it. K-Means, k 2..10, people with at least "
        "`min_sessions` sessions.",
        "",
        "## Hits per criterion",
        "",
        hits.to_markdown(index=False),
        "",
        "## Every draw (each criterion's own k)",
        "",
        table.to_markdown(index=False),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
