"""``train_and_evaluate``: the one training path used by the CLI, tuning and smoke tests.

Events → interactions → temporal hold-out → the baseline and the model fitted on the same train
part and scored on the same test users (`training.evaluate`) → the model refitted on all
interactions → a servable bundle logged to MLflow with the Feast feature service as its contract
and the lineage tags that say which data and split it was measured on → registered as
``challenger`` and promoted to ``champion`` when it beats the current one on the same split
(``training.promote``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features import store
from features.consent.feature_reads import PERSONALIZATION
from features.eventlog import EventLog
from features.identity.graph import IdentityGraph
from features.identity.keys import person_keys
from features.workspace import Workspace
from models.base import Recommender
from models.bundle import ModelBundle, context_popularity, popularity_order
from models.interactions import IdMap, Interactions
from training import lineage, tracking
from training.config import TrainConfig
from training.data import EVENT_WEIGHTS, interaction_frame, item_categories, temporal_holdout
from training.evaluate import fit, fit_and_score
from training.promote import CHAMPION, Promotion, promote, register_run

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    registered_version: str | None
    model_label: str
    n_users: int
    n_items: int
    n_train: int
    n_test_users: int
    cut: str
    timings: dict[str, float] = field(default_factory=dict)
    #: The registry decision (None when ``config.register`` is off).
    promotion: Promotion | None = None
    lineage_tags: dict[str, str] = field(default_factory=dict)


def training_set(
    ws: Workspace,
    cut: pd.Timestamp,
    train_users: IdMap,
    events: pd.DataFrame,
    service: str,
    resolve: Callable[[pd.DataFrame], pd.Series] = person_keys,
):
    """Point-in-time user features as of the cut, one row per training user with
    ``personalization`` consent at the cut (from Feast), and what consent left out."""
    before = events[events["timestamp"] < cut]
    last_device = before.assign(person=resolve(before)).groupby("person")["device_type"].last()
    users = train_users.ids
    entity_df = pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": cut,
            "device_type": [str(last_device.get(u, "other")) for u in users],
        }
    )
    return store.consented_historical_features(ws, entity_df, service)


def consented_interactions(ws: Workspace, frame: pd.DataFrame):
    """The interactions (`training.data.interaction_frame`) of people who had given
    ``personalization`` at each interaction's own time (issue #12): each interaction is a label,
    answered by the point-in-time join of the consent feature view, so a person's interactions
    before a withdrawal stay and those after it go. Returns ``(kept, drops)``."""
    labels = pd.DataFrame({"user_id": frame["user_id"], "event_timestamp": frame["timestamp"]})
    allowed, drops = store.consented_as_of(ws, labels, PERSONALIZATION)
    return frame[allowed.to_numpy()].reset_index(drop=True), drops


#: ``tailor.dataset`` of models trained on the workspace's own events (the shop's recommender).
WORKSPACE_DATASET = lineage.WORKSPACE_DATASETS[0]
TRAIN_DESCRIPTION = (
    "tailor train: models fitted on this workspace's events, scored against a baseline on a "
    "temporal hold-out (the last test_days), refitted on all events and registered as the shop's "
    "recommender (tailor-recommender)."
)

#: Columns that identify an interaction; they define the data set and split fingerprints.
FINGERPRINT_COLUMNS = ["user_id", "item_id", "timestamp"]


def lineage_tags(frame: pd.DataFrame, cut: pd.Timestamp, config: TrainConfig) -> dict[str, str]:
    """The run tags `training.promote` needs: which data, which split, which metric."""
    before = frame[frame["timestamp"] < cut]
    after = frame[frame["timestamp"] >= cut]
    return {
        lineage.DATASET: WORKSPACE_DATASET,
        lineage.DATASET_FINGERPRINT: lineage.frame_fingerprint(frame, FINGERPRINT_COLUMNS),
        lineage.PROTOCOL: f"temporal-global-cut-{config.test_days}d",
        lineage.SPLIT_FINGERPRINT: lineage.split_fingerprint(before, after, FINGERPRINT_COLUMNS),
        lineage.METRIC: f"ndcg_at_{config.k}",
        lineage.DIRECTION: "maximize",
        lineage.FEATURE_SERVICE: config.feature_service,
        lineage.GIT_COMMIT: lineage.git_commit(),
        lineage.MODEL: config.model,
    }


def _plot(metrics: dict[str, float], baseline: dict[str, float], names: tuple[str, str], k: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [m for m in metrics if m.endswith(f"_at_{k}")]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [baseline[m] for m in keys], width=0.4, label=names[0])
    ax.bar(x + 0.2, [metrics[m] for m in keys], width=0.4, label=names[1])
    ax.set_xticks(x, keys, rotation=20)
    ax.set_ylabel("value on the temporal hold-out")
    ax.set_title(f"{names[1]} vs {names[0]}")
    ax.legend()
    fig.tight_layout()
    return fig


def serving_bundle(
    model_name: str,
    model: Recommender,
    interactions: Interactions,
    frame: pd.DataFrame,
    events: pd.DataFrame,
) -> ModelBundle:
    """What the service loads: ``model`` fitted on ``interactions`` (built from ``frame``, the
    `training.data.interaction_frame` of ``events``), its histories, popularity, item categories
    and popular items per request context."""
    return ModelBundle(
        model_name=model_name,
        model=model,
        users=interactions.users,
        items=interactions.items,
        history=interactions.matrix,
        popular=popularity_order(interactions.matrix),
        item_categories=item_categories(frame, interactions.items),
        # Popular items per country / device / category for cold visitors in that context;
        # the same positive events the model learns from.
        context_popular=context_popularity(
            events[events["event_type"].isin(list(EVENT_WEIGHTS))],
            interactions.items,
            item_column="product_id",
        ),
    )


def train_and_evaluate(
    ws: Workspace, config: TrainConfig, progress: Progress | None = None
) -> TrainResult:
    """Run the whole training job and return what was measured and registered."""
    say = progress or (lambda message: logger.info(message))
    say("reading the event log")
    events = EventLog(ws.event_log_dir).read()
    if events.empty:
        raise ValueError(f"the event log at {ws.event_log_dir} is empty: import events first")
    # people under their canonical key: a login's anonymous history is the user's (issue #11)
    resolve = IdentityGraph.for_workspace(ws).canonical_keys
    frame, label_drops = consented_interactions(ws, interaction_frame(events, resolve))
    if frame.empty and label_drops.rows:
        raise ValueError(
            f"none of the {label_drops.rows} interactions is of a person who had given "
            f"{PERSONALIZATION} consent at its time: import the consent choices first "
            "(`tailor consent import FILE.csv`)"
        )
    say(
        f"consent: {label_drops.rows_dropped} of {label_drops.rows} interactions left out "
        f"({label_drops.people_dropped} people without {PERSONALIZATION})"
    )
    cut, split = temporal_holdout(frame, config.test_days)
    say(
        f"split at {cut}: {split.train.n_users} users, {split.train.n_items} items, "
        f"{len(split.test_users)} test users"
    )

    say(f"reading the training set from Feast ({config.feature_service})")
    features, feature_drops = training_set(
        ws, cut, split.train.users, events, config.feature_service, resolve
    )
    # Feast drops label rows without an eligible feature row, so count users, not rows.
    with_features = features.loc[features["sessions_30d"].notna(), "user_id"].nunique()
    covered = with_features / max(split.train.n_users, 1)

    say(f"fitting {config.baseline} and {config.model} on the train part")
    baseline = fit_and_score(config.baseline, {}, split, config.k)
    evaluated = fit_and_score(config.model, config.params, split, config.k)
    baseline_metrics, metrics = baseline.metrics, evaluated.metrics

    say(f"refitting {config.model} on all interactions")
    full = Interactions.from_frame(frame, weight_col="weight")
    final, final_fit = fit(config.model, config.params, full)
    bundle = serving_bundle(config.model, final, full, frame, events)

    timings = {
        "train_seconds": evaluated.fit_seconds,
        "recommend_seconds": evaluated.recommend_seconds,
        "baseline_train_seconds": baseline.fit_seconds,
        "baseline_recommend_seconds": baseline.recommend_seconds,
        "refit_seconds": final_fit,
    }
    say("logging to MLflow")
    tracking.configure(ws)
    tracking.experiment(ws, config.experiment, TRAIN_DESCRIPTION)
    name = lineage.run_name(config.model, config.params, WORKSPACE_DATASET)
    with tracking.start_run(f"{name} (vs {config.baseline})") as run:
        tags = lineage_tags(frame, cut, config)
        tracking.set_tags({**tags, "tailor.workspace": str(ws.home)})
        # Each value once: model, data set, protocol and feature service are tags (above); the
        # experiment is the experiment itself.
        skip = ("params", "model", "feature_service", "experiment")
        tracking.log_params({k: v for k, v in asdict(config).items() if k not in skip})
        tracking.log_params(dict(final.config.__dict__), prefix="model.")
        tracking.log_params(
            {
                "n_users": full.n_users,
                "n_items": full.n_items,
                "n_interactions": int(full.matrix.nnz),
                "cut": str(cut),
                "n_test_users": len(split.test_users),
            }
        )
        tracking.log_metrics(metrics)
        tracking.log_metrics(baseline_metrics, prefix="baseline_")
        tracking.log_metrics(timings)
        tracking.log_metrics({"feature_coverage": covered})
        # what consent left out (issue #12): interactions as labels, feature rows at the cut
        tracking.log_metrics(label_drops.metrics("consent_interactions_"))
        tracking.log_metrics(feature_drops.metrics("consent_feature_"))
        tracking.log_dataset(
            features,
            f"{config.feature_service}@{cut.date()}",
            "training",
            str(ws.feature_data_dir / "user_features.parquet"),
        )
        tracking.log_figure(
            _plot(metrics, baseline_metrics, (config.baseline, config.model), config.k),
            "plots/model_vs_baseline.png",
        )
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = bundle.save(Path(tmp) / "bundle")
            info = tracking.log_bundle(
                bundle_dir, list(full.users.ids[:2]), config.k, name=config.model
            )
    version, promotion = None, None
    label = f"{config.model}@run:{run.info.run_id[:8]}"
    if config.register:
        # After the run has ended: registering and the promotion's own run stay outside it.
        say(f"registering {config.registered_model} as challenger")
        mv = register_run(ws, run.info.run_id, config.registered_model)
        promotion = promote(ws, config.registered_model)
        say(f"promotion: {promotion.reason}")
        if config.alias != CHAMPION:
            tracking.set_alias(config.registered_model, config.alias, mv.version)
        version = str(mv.version)
        label = f"{config.registered_model}@{version}"
    return TrainResult(
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        metrics=metrics,
        baseline_metrics=baseline_metrics,
        registered_version=version,
        model_label=label,
        n_users=full.n_users,
        n_items=full.n_items,
        n_train=int(split.train.matrix.nnz),
        n_test_users=len(split.test_users),
        cut=str(cut),
        timings=timings,
        promotion=promotion,
        lineage_tags=tags,
    )
