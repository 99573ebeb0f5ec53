"""The navigation-patterns job: event log → sessions → token sequences → PrefixSpan → a table.

A session's sequence is one event field (``page``, ``category`` or ``event_type``) in time order,
missing values skipped; sessions with no value at all are left out, so a fractional support is a
share of the sessions that have one. Each session belongs to one person: its first ``user_id``
when it has one, else ``anon:<anonymous_id>`` (the Feast entity key, see
``features.identity.keys``).

Per-segment mining takes a person → segment mapping (a dict, a frame, or a CSV/Parquet file with
``user_id`` and ``segment_label`` or ``segment`` columns; later the ``user_segments`` Feast view)
and mines each segment's sessions separately.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.eventlog import EventLog
from features.identity.keys import ANON_PREFIX
from features.workspace import Workspace
from models.prefixspan import PatternConfig, PatternSet, PrefixSpan, ProgressCallback

logger = logging.getLogger(__name__)

BY_FIELDS = ("page", "category", "event_type")
EXPERIMENT = "tailor-patterns"
#: Joins a pattern's tokens in the CSV ("home > category > product").
SEPARATOR = " > "
SEGMENT_COLUMNS = ("segment_label", "segment")
TABLE_COLUMNS = ("pattern", "length", "support", "support_fraction", "sessions")


@dataclass(frozen=True)
class SessionSequences:
    """One row per session: ``session_ids[i]`` of person ``user_ids[i]`` has ``sequences[i]``."""

    by: str
    session_ids: np.ndarray
    user_ids: np.ndarray
    sequences: list[list[str]]

    def __len__(self) -> int:
        return len(self.sequences)


@dataclass(frozen=True)
class PatternsResult:
    table: pd.DataFrame
    out: Path
    run_id: str | None
    by: str
    n_sessions: int
    n_patterns: int
    seconds: float
    segments: tuple[str, ...] = ()
    unassigned_sessions: int = 0


def check_by(by: str) -> str:
    if by not in BY_FIELDS:
        raise ValueError(f"unknown sequence field {by!r}; allowed: {', '.join(BY_FIELDS)}")
    return by


def session_sequences(
    events: pd.DataFrame, by: str, collapse_repeats: bool = False, keep_empty: bool = False
) -> SessionSequences:
    """Sequences of ``events[by]`` per session, sessions sorted by id.

    ``events`` needs ``session_id``, ``user_id``, ``anonymous_id`` and ``by``, in time order
    (as :meth:`EventLog.read` returns them). ``collapse_repeats`` merges runs of one token
    ("product, product, cart" → "product, cart"). ``keep_empty`` keeps sessions without any
    token (empty sequences), so the result lines up with every session of ``events``.
    """
    check_by(by)
    codes, session_ids = pd.factorize(events["session_id"], sort=True)
    n_sessions = len(session_ids)
    user = events["user_id"].astype(object).where(lambda s: s.notna() & s.ne(""))
    anon = events["anonymous_id"].astype(object)
    first_user = user.groupby(codes).first().reindex(range(n_sessions))
    first_anon = (ANON_PREFIX + anon.astype(str)).groupby(codes).first().reindex(range(n_sessions))
    user_ids = first_user.where(first_user.notna(), first_anon).to_numpy(dtype=object)

    order = np.argsort(codes, kind="stable")  # keeps the time order inside each session
    tokens = events[by].to_numpy(dtype=object)[order]
    sessions = codes[order]
    valid = pd.notna(tokens) & (tokens != "")
    tokens, sessions = tokens[valid], sessions[valid]
    if collapse_repeats and len(tokens):
        repeat = np.r_[False, (sessions[1:] == sessions[:-1]) & (tokens[1:] == tokens[:-1])]
        tokens, sessions = tokens[~repeat], sessions[~repeat]
    bounds = np.searchsorted(sessions, np.arange(n_sessions + 1))
    sequences = [tokens[bounds[i] : bounds[i + 1]].tolist() for i in range(n_sessions)]
    keep = np.ones(n_sessions, dtype=bool) if keep_empty else np.diff(bounds) > 0
    return SessionSequences(
        by=by,
        session_ids=np.asarray(session_ids, dtype=object)[keep],
        user_ids=user_ids[keep],
        sequences=[seq for seq, kept in zip(sequences, keep, strict=True) if kept],
    )


def read_events(ws: Workspace, by: str) -> pd.DataFrame:
    """The columns the sequences need, from the workspace's event log (raises when empty)."""
    columns = ["session_id", "user_id", "anonymous_id", check_by(by)]
    events = EventLog(ws.event_log_dir).read(columns=list(dict.fromkeys(columns)))
    if events.empty:
        raise ValueError(f"the event log at {ws.event_log_dir} is empty: import events first")
    return events


def segment_mapping(segments: Mapping[str, str] | pd.DataFrame | Path | str) -> dict[str, str]:
    """A person → segment dict from a mapping, a frame or a CSV/Parquet file with ``user_id``
    and ``segment_label`` (or ``segment``) columns."""
    if isinstance(segments, Mapping):
        return {str(k): str(v) for k, v in segments.items()}
    if isinstance(segments, str | Path):
        path = Path(segments)
        if not path.exists():
            raise FileNotFoundError(f"segment file {path} does not exist")
        segments = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    column = next((c for c in SEGMENT_COLUMNS if c in segments.columns), None)
    if "user_id" not in segments.columns or column is None:
        raise ValueError(
            f"segments need a user_id column and one of {', '.join(SEGMENT_COLUMNS)}; "
            f"got {', '.join(map(str, segments.columns))}"
        )
    frame = segments.dropna(subset=["user_id", column])
    if "event_timestamp" in frame.columns:  # a Feast-style table: the latest row per user wins
        frame = frame.sort_values("event_timestamp", kind="stable")
    return dict(zip(frame["user_id"].astype(str), frame[column].astype(str), strict=True))


def pattern_frame(patterns: PatternSet, segment: str | None = None) -> pd.DataFrame:
    """The CSV table of one :class:`PatternSet`, most supported first."""
    frame = pd.DataFrame(
        {
            "pattern": [SEPARATOR.join(map(str, p)) for p in patterns.patterns],
            "length": np.fromiter((len(p) for p in patterns.patterns), dtype=np.int64),
            "support": patterns.supports,
            "support_fraction": np.round(patterns.fractions, 6),
            "sessions": np.full(len(patterns), patterns.n_sequences, dtype=np.int64),
        }
    )
    if segment is not None:
        frame.insert(0, "segment", segment)
    return frame


def mine_sessions(
    sequences: SessionSequences,
    config: PatternConfig,
    segments: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Mine all sessions, or each segment's: ``(table, segment names, unassigned sessions)``."""
    miner = PrefixSpan(config)
    if segments is None:
        return pattern_frame(miner.mine(sequences.sequences, callback=progress)), (), 0
    groups = [segments.get(str(u)) for u in sequences.user_ids]
    assigned = [i for i, g in enumerate(groups) if g is not None]
    by_segment = miner.mine_groups(
        [sequences.sequences[i] for i in assigned],
        [groups[i] for i in assigned],
        callback=progress,
    )
    frames = [pattern_frame(found, str(name)) for name, found in by_segment.items()]
    columns = ["segment", *TABLE_COLUMNS]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return table, tuple(map(str, by_segment)), len(groups) - len(assigned)


def run_patterns(
    ws: Workspace,
    config: PatternConfig,
    by: str = "page",
    *,
    out: Path,
    segments: Mapping[str, str] | pd.DataFrame | Path | str | None = None,
    collapse_repeats: bool = False,
    progress: ProgressCallback | None = None,
    track: bool = True,
) -> PatternsResult:
    """Mine the workspace's sessions, write the pattern table to ``out`` (CSV) and, with
    ``track``, log parameters, counts and the table to MLflow (experiment ``tailor-patterns``)."""
    started = time.perf_counter()
    mapping = None if segments is None else segment_mapping(segments)
    sequences = session_sequences(read_events(ws, by), by, collapse_repeats=collapse_repeats)
    table, names, unassigned = mine_sessions(sequences, config, mapping, progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    seconds = time.perf_counter() - started
    logger.info("%d patterns over %d sessions in %.2fs", len(table), len(sequences), seconds)
    run_id = None
    if track:
        run_id = _track(ws, config, by, collapse_repeats, sequences, table, names, out, seconds)
    return PatternsResult(
        table=table,
        out=out,
        run_id=run_id,
        by=by,
        n_sessions=len(sequences),
        n_patterns=len(table),
        seconds=seconds,
        segments=names,
        unassigned_sessions=unassigned,
    )


def _track(
    ws: Workspace,
    config: PatternConfig,
    by: str,
    collapse_repeats: bool,
    sequences: SessionSequences,
    table: pd.DataFrame,
    segments: tuple[str, ...],
    out: Path,
    seconds: float,
) -> str:
    from training import tracking

    tracking.configure(ws)
    tracking.experiment(ws, EXPERIMENT)
    with tracking.start_run(f"patterns-{by}") as run:
        tracking.set_tags({"tailor.kind": "patterns", "tailor.by": by})
        params = {key: str(value) for key, value in asdict(config).items()}
        params.update(by=by, collapse_repeats=collapse_repeats, per_segment=bool(segments))
        tracking.log_params(params)
        tracking.log_metrics(
            {
                "n_sessions": len(sequences),
                "n_patterns": len(table),
                "n_segments": len(segments),
                "seconds": seconds,
            }
        )
        tracking.log_artifact(out, "patterns")
        return run.info.run_id
