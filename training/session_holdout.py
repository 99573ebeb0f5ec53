"""First-session visitors of a temporal hold-out, and the model trained before them (issue #11).

The session strategy of ``/recommend`` serves people the model has never seen. To measure it,
the events are cut where `tailor train` cuts them (`training.data.holdout_cut`, the last
``test_days``); the model is fitted the way `tailor train` fits it (`training.evaluate.fit`) on the
events before the cut and bundled as the service loads it (`training.pipeline.serving_bundle`);
the visitors whose very first event comes after the cut are the test people, and their first
session is what is replayed (`serving.session_bench`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.identity.keys import person_keys
from models.bundle import ModelBundle
from models.interactions import Interactions
from training.data import holdout_cut, interaction_frame
from training.evaluate import fit
from training.pipeline import serving_bundle


@dataclass(frozen=True)
class SessionHoldout:
    """``sessions``: every event of the test visitors' first sessions (event-log columns plus
    ``person``), sorted by time; ``bundle``: the model fitted on the events before ``cut``."""

    cut: pd.Timestamp
    bundle: ModelBundle
    sessions: pd.DataFrame
    n_train_events: int
    fit_seconds: float

    @property
    def n_visitors(self) -> int:
        return int(self.sessions["person"].nunique())


def first_sessions(events: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    """Every event of the first session of each person
    (:func:`features.identity.keys.person_keys`) whose first event is at or after ``cut``, with a
    ``person`` column, sorted by time and event id. Only that person's events of the session are
    kept."""
    frame = events.assign(person=person_keys(events).to_numpy())
    frame = frame.sort_values(["timestamp", "event_id"], kind="stable")
    first = frame.groupby("person", sort=False).head(1)
    first = first[first["timestamp"] >= cut]
    keys = pd.MultiIndex.from_frame(first[["person", "session_id"]])
    mine = pd.MultiIndex.from_frame(frame[["person", "session_id"]]).isin(keys)
    return frame[mine].reset_index(drop=True)


def first_session_holdout(
    events: pd.DataFrame, test_days: int, model: str, params: dict | None = None
) -> SessionHoldout:
    """Cut ``events`` as `tailor train` does, fit ``model`` (``params``) on the events before the
    cut, and keep the first sessions of the visitors first seen after it."""
    cut = holdout_cut(interaction_frame(events), test_days)
    before = events[events["timestamp"] < cut]
    frame = interaction_frame(before)
    interactions = Interactions.from_frame(frame, weight_col="weight")
    fitted, seconds = fit(model, params or {}, interactions)
    bundle = serving_bundle(model, fitted, interactions, frame, before)
    return SessionHoldout(
        cut=cut,
        bundle=bundle,
        sessions=first_sessions(events, cut),
        n_train_events=len(before),
        fit_seconds=seconds,
    )
