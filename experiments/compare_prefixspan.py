"""Our PrefixSpan (models.prefixspan) against the `prefixspan` package (PyPI prefixspan==0.5.2).

Same process, same input: the sessions of one generated clickstream as lists of tokens (page,
category and event type sequences). For each field it mines frequent and closed patterns with
both, checks the results and times them (best of --repeat runs each), and writes a Markdown
table. Needs the `bench` extra: pip install -e '.[bench]' -c constraints.txt.

Agreement:
* frequent: identical {pattern: support} dictionaries.
* closed: ours equals the closed patterns derived from the reference's own frequent output (no
  one-longer super-pattern with the same support, checked by subsequence tests, independent of
  our closure code). The reference's ``closed=True`` is also compared: it returns extra patterns
  (its BIDE check misses some extensions, github.com/chuanconggao/PrefixSpan-py/issues/14); the
  script counts them and finds, for every one, a super-pattern of equal support as a witness.

    python experiments/compare_prefixspan.py --users 1200 --days 30 --seed 7 \\
        --out experiments/results/patterns.md
"""

from __future__ import annotations

import argparse
import platform
import shlex
import time
from collections import defaultdict
from pathlib import Path

from prefixspan import PrefixSpan as ReferencePrefixSpan

from features.synthetic.generate import generate_clickstream
from models.prefixspan import PatternConfig, PrefixSpan, resolve_min_support
from training import result_files
from training.patterns import session_sequences

#: field → minimum support (fraction of sessions) used for the comparison
DEFAULT_SUPPORTS = {"page": 0.02, "category": 0.002, "event_type": 0.05}


def is_subsequence(short: tuple, long: tuple) -> bool:
    items = iter(long)
    return all(any(x == token for x in items) for token in short)


def by_length_and_support(frequent: dict[tuple, int]) -> dict[tuple[int, int], list[tuple]]:
    groups: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    for pattern, support in frequent.items():
        groups[(len(pattern), support)].append(pattern)
    return groups


def witness(pattern: tuple, support: int, groups: dict) -> tuple | None:
    """A one-longer super-pattern of ``pattern`` with the same support, if any."""
    for longer in groups.get((len(pattern) + 1, support), ()):
        if is_subsequence(pattern, longer):
            return longer
    return None


def closed_from(frequent: dict[tuple, int]) -> dict[tuple, int]:
    """Closed patterns of a complete frequent set: no one-longer pattern of equal support
    contains them (an implementation independent of models.prefixspan)."""
    groups = by_length_and_support(frequent)
    return {p: s for p, s in frequent.items() if witness(p, s, groups) is None}


def best_time(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def reference(sequences, min_count: int, closed: bool) -> dict[tuple, int]:
    miner = ReferencePrefixSpan(sequences)
    return {tuple(p): s for s, p in miner.frequent(min_count, closed=closed)}


def compare_field(by: str, sequences: list[list[str]], fraction: float, repeat: int) -> list[dict]:
    min_count = resolve_min_support(fraction, len(sequences))
    rows = []
    ours_frequent_t, ours_frequent = best_time(
        lambda: PrefixSpan(PatternConfig(min_support=min_count)).mine(sequences), repeat
    )
    ref_frequent_t, ref_frequent = best_time(lambda: reference(sequences, min_count, False), repeat)
    same = ours_frequent.as_dict() == ref_frequent
    rows.append(
        dict(by=by, kind="frequent", min_count=min_count, n=len(ours_frequent), agree=same,
             ours=ours_frequent_t, ref=ref_frequent_t, note="identical pattern → support maps"
             if same else "DIFFERENT")
    )  # fmt: skip
    ours_closed_t, ours_closed = best_time(
        lambda: PrefixSpan(PatternConfig(min_support=min_count, closed=True)).mine(sequences),
        repeat,
    )
    ref_closed_t, ref_closed = best_time(lambda: reference(sequences, min_count, True), repeat)
    expected = closed_from(ref_frequent)
    ours = ours_closed.as_dict()
    extra = {p: s for p, s in ref_closed.items() if p not in ours}
    subset = all(ref_closed.get(p) == s for p, s in ours.items())
    groups = by_length_and_support(ref_frequent)
    witnessed = sum(witness(p, s, groups) is not None for p, s in extra.items())
    agree = ours == expected and subset and witnessed == len(extra)
    note = (
        f"= closed set of the reference's frequent output ({len(expected)}); reference "
        f"closed=True gives {len(ref_closed)}: ours + {len(extra)} not closed "
        f"({witnessed} with an equal-support super-pattern found)"
    )
    rows.append(
        dict(by=by, kind="closed", min_count=min_count, n=len(ours), agree=agree,
             ours=ours_closed_t, ref=ref_closed_t, note=note)
    )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="best of N timings")
    parser.add_argument("--fields", nargs="+", default=list(DEFAULT_SUPPORTS))
    parser.add_argument("--out", type=Path, default=Path("experiments/results/patterns.md"))
    args = parser.parse_args(argv)

    events = generate_clickstream(args.users, args.days, args.seed).events
    rows: list[dict] = []
    sizes = {}
    for by in args.fields:
        sequences = session_sequences(events, by).sequences
        sizes[by] = (len(sequences), sum(map(len, sequences)))
        print(f"{by}: {len(sequences)} sessions, {sizes[by][1]} tokens", flush=True)
        for row in compare_field(by, sequences, DEFAULT_SUPPORTS[by], args.repeat):
            rows.append(row)
            print(
                f"  {row['kind']:8s} n={row['n']:7d} agree={row['agree']} ours={row['ours']:.3f}s "
                f"ref={row['ref']:.3f}s ratio={row['ours'] / row['ref']:.3f}",
                flush=True,
            )
    write_report(args, rows, sizes, shlex.join(recorded_command(args)))
    return 0 if all(row["agree"] for row in rows) else 1


NOTES = [
    "Notes:",
    "",
    "- Frequent: identical {pattern: support} maps. Closed: ours equals the closed subset of the",
    "  reference's own frequent output (checked here by subsequence tests, not by our code); the",
    "  package's `closed=True` also returns patterns that are not closed (its BIDE check misses",
    "  some extensions, github.com/chuanconggao/PrefixSpan-py/issues/14): for each extra one the",
    "  script finds a one-longer super-pattern with the same support.",
    "- Our worst ratio is on short, low-support patterns (many patterns with small projections):",
    "  there our fixed cost per pattern (a few numpy calls, ~20 µs) is closest to the reference's",
    "  pure-python scan of a small projection. The reference's closed mode is slow because it",
    "  re-scans every supporting sequence backwards for each pattern.",
    "- Timed on a shared 2-core machine with other jobs running, so the seconds are noisy; both",
    "  miners ran one after the other in the same process on the same lists. The reference's time",
    "  includes turning its list of results into a dict (milliseconds).",
]


def recorded_command(args: argparse.Namespace) -> list[str]:
    """The command line that writes this table again, every option resolved (defaults too)."""
    return result_files.script_command(
        "experiments/compare_prefixspan.py",
        ["--users", str(args.users), "--days", str(args.days), "--seed", str(args.seed)]
        + ["--repeat", str(args.repeat), "--fields", *args.fields]
        + ["--out", result_files.shown(args.out)],
    )


def write_report(args, rows: list[dict], sizes: dict, command: str) -> None:
    lines = [
        result_files.generated_by(command),
        "",
        "# PrefixSpan: ours (models/prefixspan.py) vs the `prefixspan` package",
        "",
        f"Generated clickstream: `generate_clickstream({args.users}, {args.days}, "
        f"seed={args.seed})`; one sequence per session (sessions without a value left out). "
        "Same process, same input (lists of str tokens); times are wall-clock seconds, best of "
        f"{args.repeat}, including our encoding and next-occurrence table. "
        f"Python {platform.python_version()}, {platform.machine()}, prefixspan 0.5.2.",
        "",
        "| field | sessions | tokens | patterns | min support | ours s | reference s "
        "| ours / reference | agree | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        n_sessions, n_tokens = sizes[row["by"]]
        lines.append(
            f"| {row['by']} ({row['kind']}) | {n_sessions:,} | {n_tokens:,} | {row['n']:,} "
            f"| {row['min_count']} | {row['ours']:.3f} | {row['ref']:.3f} "
            f"| {row['ours'] / row['ref']:.3f} | {'yes' if row['agree'] else 'NO'} "
            f"| {row['note']} |"
        )
    lines += ["", *NOTES, "", "Produced by:", "", "```bash", command.strip(), "```", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
