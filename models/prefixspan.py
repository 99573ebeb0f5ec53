"""Frequent sequential patterns with PrefixSpan: which navigation paths many sessions share.

A *sequence* is one session's tokens in time order (its pages, categories or event types). A
*pattern* ``(a, b, c)`` is contained in a sequence when its tokens occur in that order, gaps
allowed; its *support* is the number of sequences containing it. PrefixSpan (Pei et al., 2001)
grows patterns one token at a time, depth first, counting only inside the *projected database*
of the current prefix: for each supporting sequence, the suffix after the prefix's first match.

Projections are pseudo-projections: a projected database is one array of row numbers (the row of
the prefix's last matched token in each supporting sequence; a sequence appears at most once).
A next-occurrence table ``next_row[row, item]`` (the row of the first ``item`` after ``row`` in
the same sequence, or -1) turns counting every extension of a prefix, and projecting onto each,
into one gather of an ``(m, n_items)`` block and one boolean selection of it, so the work per
pattern is a few numpy calls whatever the sequences' lengths. Tokens below the minimum support
are dropped first: they cannot be in a frequent pattern, and dropping them changes no other
support.

*Closed* patterns are the frequent patterns no one-token-longer super-pattern matches with the
same support (then no longer one does either). They are found exactly from the frequent patterns
one token longer than the limit: a pattern is not closed when deleting one token of a pattern
of the same support gives it. The ``prefixspan`` package's ``closed=True`` (BIDE's checks) keeps
some patterns that are not closed (its issue #14); ``experiments/compare_prefixspan.py`` shows
that each extra one has a super-pattern of equal support.

Pure numpy and python; tokens are any sortable hashable values (strings in Tailor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: A progress callback: ``callback(done, total)`` after each first token's patterns are mined.
ProgressCallback = Callable[[int, int], None]

#: ``n_rows * n_items`` above which the next-occurrence table (int64) is refused (1 GiB).
MAX_TABLE_CELLS = 1 << 27


def resolve_min_support(min_support: int | float, n_sequences: int) -> int:
    """The minimum support as a count of sequences.

    An ``int`` (>= 1) is a count; a ``float`` in (0, 1] is a share of ``n_sequences``, rounded
    up (0.05 of 1,001 sequences is 51), and at least 1.
    """
    if isinstance(min_support, bool) or not isinstance(min_support, int | float):
        raise ValueError(f"min_support {min_support!r} is neither a count nor a fraction")
    if isinstance(min_support, int):
        if min_support < 1:
            raise ValueError(f"min_support count {min_support} must be >= 1")
        return min_support
    if not 0.0 < min_support <= 1.0:
        raise ValueError(f"min_support fraction {min_support} must be in (0, 1]")
    # a float product such as 0.07 * 100 = 7.000000000000001 must not round up to 8
    return max(1, math.ceil(round(min_support * n_sequences, 9)))


@dataclass(frozen=True)
class PatternConfig:
    """What to mine.

    ``min_support``: a count (int >= 1) or a fraction of the sequences (float in (0, 1]).
    ``max_length`` / ``min_length``: pattern lengths kept (``None``: no upper limit).
    ``closed``: keep only closed patterns (closed among all frequent patterns, not only those
    up to ``max_length``).
    """

    min_support: int | float = 0.05
    max_length: int | None = None
    min_length: int = 1
    closed: bool = False

    def __post_init__(self) -> None:
        resolve_min_support(self.min_support, 1)
        if self.max_length is not None and (
            isinstance(self.max_length, bool) or not isinstance(self.max_length, int)
        ):
            raise ValueError(f"max_length {self.max_length!r} must be an int >= 1 or None")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length {self.max_length} must be >= 1 or None")
        if isinstance(self.min_length, bool) or not isinstance(self.min_length, int):
            raise ValueError(f"min_length {self.min_length!r} must be an int >= 1")
        if self.min_length < 1:
            raise ValueError(f"min_length {self.min_length} must be >= 1")
        if self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")


@dataclass(frozen=True)
class PatternSet:
    """Mined patterns, most supported first (then shorter, then by token order).

    ``patterns[i]`` is a tuple of tokens with support ``supports[i]`` (int64, shape
    ``(n_patterns,)``), a count out of ``n_sequences``; ``min_count`` is the support threshold
    that was applied.
    """

    patterns: tuple[tuple[Hashable, ...], ...]
    supports: np.ndarray
    n_sequences: int
    min_count: int
    closed: bool

    def __len__(self) -> int:
        return len(self.patterns)

    @property
    def fractions(self) -> np.ndarray:
        """Supports as shares of the sequences, shape ``(n_patterns,)``."""
        return self.supports / max(self.n_sequences, 1)

    def as_dict(self) -> dict[tuple[Hashable, ...], int]:
        """``{pattern: support}``."""
        return dict(zip(self.patterns, self.supports.tolist(), strict=True))


def _sorted_vocabulary(tokens: Iterable[Hashable]) -> list[Hashable]:
    unique = set(tokens)
    try:
        return sorted(unique)
    except TypeError:  # mixed types: a stable, still deterministic order
        return sorted(unique, key=lambda t: (type(t).__name__, repr(t)))


class SequenceIndex:
    """Sequences of tokens in a flat layout with a next-occurrence table over some tokens.

    Rows: sequence ``s`` owns rows ``start[s] .. start[s] + len(s)``; its first row is a
    sentinel ("before the first token") and the others hold its tokens in order. ``columns``
    are the token codes the table covers (all tokens unless ``min_count`` drops rare ones).
    """

    def __init__(self, sequences: Sequence[Sequence[Hashable]], min_count: int = 1) -> None:
        self.vocabulary = _sorted_vocabulary(t for seq in sequences for t in seq)
        self.code_of = {token: code for code, token in enumerate(self.vocabulary)}
        lengths = np.fromiter((len(seq) for seq in sequences), dtype=np.int64, count=len(sequences))
        self.n_sequences = len(sequences)
        self.start = np.zeros(self.n_sequences, dtype=np.int64)
        if self.n_sequences:
            self.start[1:] = np.cumsum(lengths + 1)[:-1]
        self.end = self.start + lengths  # last row of each sequence
        n_rows = int(lengths.sum()) + self.n_sequences
        codes = np.fromiter(
            (self.code_of[t] for seq in sequences for t in seq),
            dtype=np.int64,
            count=n_rows - len(sequences),
        )
        token_rows = np.ones(n_rows, dtype=bool)
        token_rows[self.start] = False
        self.row_code = np.full(n_rows, -1, dtype=np.int64)
        self.row_code[token_rows] = codes
        self.row_end = np.repeat(self.end, lengths + 1)  # last row of the row's sequence
        # support of each single token: sequences holding it at least once
        seq_of_row = np.repeat(np.arange(self.n_sequences), lengths + 1)[token_rows]
        pairs = np.unique(seq_of_row * max(len(self.vocabulary), 1) + codes)
        self.token_support = np.bincount(
            pairs % max(len(self.vocabulary), 1), minlength=len(self.vocabulary)
        ).astype(np.int64)
        self.columns = np.flatnonzero(self.token_support >= min_count)
        self.column_of = np.full(len(self.vocabulary), -1, dtype=np.int64)
        self.column_of[self.columns] = np.arange(len(self.columns))
        self.next_row = self._next_occurrences(n_rows)

    def _next_occurrences(self, n_rows: int) -> np.ndarray:
        """``(n_rows, n_columns)``: row of the next occurrence of each column's token after a
        row in the same sequence, else -1."""
        n_cols = len(self.columns)
        if n_rows * n_cols > MAX_TABLE_CELLS:
            raise ValueError(
                f"{n_rows:,} positions × {n_cols:,} tokens is too large a table "
                f"(limit {MAX_TABLE_CELLS:,} cells); raise the minimum support"
            )
        # int64 (numpy's index type): rows taken from the table index it again without a cast
        table = np.full((n_rows, n_cols), -1, dtype=np.int64)
        order = np.argsort(self.row_code, kind="stable")  # rows grouped by token, in row order
        bounds = np.searchsorted(self.row_code[order], np.r_[self.columns, self.columns + 1])
        rows = np.arange(n_rows)
        for col in range(n_cols):
            occurrences = order[bounds[col] : bounds[n_cols + col]]
            at = np.searchsorted(occurrences, rows, side="right")
            found = at < len(occurrences)
            nxt = occurrences[np.minimum(at, len(occurrences) - 1)]
            hit = found & (nxt <= self.row_end)
            table[hit, col] = nxt[hit]
        return table

    def encode(self, pattern: Sequence[Hashable]) -> np.ndarray | None:
        """Column numbers of a pattern's tokens, or None if a token is not in the table."""
        codes = [self.code_of.get(token, -1) for token in pattern]
        cols = [int(self.column_of[c]) if c >= 0 else -1 for c in codes]
        return None if min(cols, default=0) < 0 else np.asarray(cols, dtype=np.int64)

    def contains(self, pattern: Sequence[Hashable]) -> np.ndarray:
        """Boolean mask, shape ``(n_sequences,)``: which sequences contain ``pattern``."""
        mask = np.zeros(self.n_sequences, dtype=bool)
        cols = self.encode(pattern)
        if cols is None:
            return mask
        alive = np.arange(self.n_sequences)
        rows = self.start
        for col in cols:
            rows = self.next_row[rows, col]
            keep = rows >= 0
            alive, rows = alive[keep], rows[keep]
        mask[alive] = True
        return mask

    def support(self, pattern: Sequence[Hashable]) -> int:
        """Number of sequences containing ``pattern``."""
        return int(self.contains(pattern).sum())


class PrefixSpan:
    """PrefixSpan miner over token sequences; see the module docstring for the method."""

    def __init__(self, config: PatternConfig | None = None) -> None:
        self.config = config or PatternConfig()

    def mine(
        self,
        sequences: Sequence[Sequence[Hashable]],
        *,
        callback: ProgressCallback | None = None,
    ) -> PatternSet:
        """Frequent (or closed) patterns of ``sequences`` under :attr:`config`."""
        config = self.config
        min_count = resolve_min_support(config.min_support, len(sequences))
        index = SequenceIndex(sequences, min_count=min_count)
        # closedness of a pattern of the longest kept length needs the patterns one longer
        depth = config.max_length
        if config.closed and depth is not None:
            depth += 1
        found_cols, found_supports = _grow(index, min_count, depth, callback)
        if config.closed:
            keep = _closed_mask(found_cols, found_supports)
        else:
            keep = np.ones(len(found_cols), dtype=bool)
        lengths = np.fromiter((len(p) for p in found_cols), dtype=np.int64, count=len(found_cols))
        keep &= lengths >= config.min_length
        if config.max_length is not None:
            keep &= lengths <= config.max_length
        chosen = np.flatnonzero(keep)
        # sort: support desc, then length, then token order (codes follow the sorted vocabulary)
        chosen = sorted(
            chosen.tolist(), key=lambda i: (-found_supports[i], len(found_cols[i]), found_cols[i])
        )
        tokens = [index.vocabulary[c] for c in index.columns.tolist()]
        return PatternSet(
            patterns=tuple(tuple(tokens[c] for c in found_cols[i]) for i in chosen),
            supports=np.asarray([found_supports[i] for i in chosen], dtype=np.int64),
            n_sequences=len(sequences),
            min_count=min_count,
            closed=config.closed,
        )

    def mine_groups(
        self,
        sequences: Sequence[Sequence[Hashable]],
        groups: Sequence[Hashable],
        *,
        callback: ProgressCallback | None = None,
    ) -> dict[Hashable, PatternSet]:
        """Patterns mined separately in each group (e.g. a user segment), ``groups[i]`` being
        the group of ``sequences[i]``. A fractional minimum support is a share of each group's
        sequences. ``callback(done, total)`` counts finished groups."""
        if len(groups) != len(sequences):
            raise ValueError(f"{len(groups)} groups for {len(sequences)} sequences")
        members: dict[Hashable, list[int]] = {}
        for i, group in enumerate(groups):
            members.setdefault(group, []).append(i)
        names = _sorted_vocabulary(members)
        results: dict[Hashable, PatternSet] = {}
        for done, name in enumerate(names, start=1):
            results[name] = self.mine([sequences[i] for i in members[name]])
            if callback is not None:
                callback(done, len(names))
        return results


def _grow(
    index: SequenceIndex,
    min_count: int,
    depth: int | None,
    callback: ProgressCallback | None,
) -> tuple[list[tuple[int, ...]], list[int]]:
    """Depth-first PrefixSpan over pseudo-projections; patterns as tuples of column numbers.

    A node is ``(prefix, rows, cols)``: the rows of its projection and the columns still worth
    counting (the tokens frequent in the parent's projection; a token infrequent there stays
    infrequent below). ``cols`` is None for "every column": gathering a subset only pays when
    it is much smaller than the table.
    """
    patterns: list[tuple[int, ...]] = []
    supports: list[int] = []
    next_row = index.next_row
    n_cols = next_row.shape[1]
    if index.n_sequences == 0 or n_cols == 0:
        return patterns, supports
    limit = math.inf if depth is None else depth
    roots, root_rows = _extend(next_row, index.start, None, min_count)
    root_counts = [len(rows) for rows in root_rows]
    narrowed = roots if 2 * len(roots) <= n_cols else None
    for done, (col, rows) in enumerate(zip(roots.tolist(), root_rows, strict=True), start=1):
        patterns.append((col,))
        supports.append(root_counts[done - 1])
        stack = [((col,), rows, narrowed)] if limit > 1 else []
        while stack:
            prefix, rows, cols = stack.pop()
            children, child_rows = _extend(next_row, rows, cols, min_count)
            if not len(children):
                continue
            child_cols = children if 2 * len(children) <= n_cols else None
            grow = len(prefix) + 1 < limit
            for child, rows_of_child in zip(children.tolist(), child_rows, strict=True):
                pattern = (*prefix, child)
                patterns.append(pattern)
                supports.append(len(rows_of_child))
                if grow:
                    stack.append((pattern, rows_of_child, child_cols))
        if callback is not None:
            callback(done, len(roots))
    return patterns, supports


def _extend(
    next_row: np.ndarray, rows: np.ndarray, cols: np.ndarray | None, min_count: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The frequent one-token extensions of a projection: their columns and projections."""
    block = next_row.take(rows, axis=0)  # (m, n_cols): next row of every token per sequence
    if cols is not None:
        block = block.take(cols, axis=1)
    hits = block >= 0
    counts = np.count_nonzero(hits, axis=0)
    frequent = np.flatnonzero(counts >= min_count)
    if not len(frequent):
        return frequent, []
    if len(frequent) < block.shape[1]:
        block, hits, counts = block[:, frequent], hits[:, frequent], counts[frequent]
    found = block.T[hits.T]  # every child's rows, grouped by child (column-major order)
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    columns = frequent if cols is None else cols[frequent]
    return columns, [found[a:b] for a, b in zip(starts, ends, strict=True)]


def _closed_mask(patterns: list[tuple[int, ...]], supports: list[int]) -> np.ndarray:
    """Which patterns are closed, given every frequent pattern up to one longer than needed.

    A pattern is not closed iff some pattern one token longer has the same support and
    contains it, i.e. gives it when one of its tokens is deleted.
    """
    support_of = dict(zip(patterns, supports, strict=True))
    not_closed: set[tuple[int, ...]] = set()
    for pattern, support in zip(patterns, supports, strict=True):
        if len(pattern) < 2:
            continue
        for cut in range(len(pattern)):
            if cut and pattern[cut] == pattern[cut - 1]:
                continue  # deleting either of two equal neighbours gives the same pattern
            shorter = pattern[:cut] + pattern[cut + 1 :]
            if support_of.get(shorter) == support:
                not_closed.add(shorter)
    return np.fromiter((p not in not_closed for p in patterns), dtype=bool, count=len(patterns))
