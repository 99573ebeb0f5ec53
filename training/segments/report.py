"""Figures and the Markdown result file of a segmentation run (matplotlib, no MLflow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training import result_files


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter(ax, points: np.ndarray, labels: np.ndarray, names: list[str], title: str) -> None:
    cmap = _plt().get_cmap("tab10" if len(names) <= 10 else "tab20")
    for s, name in enumerate(names):
        rows = labels == s
        ax.scatter(points[rows, 0], points[rows, 1], s=5, alpha=0.6, color=cmap(s % cmap.N),
                   label=f"{name} ({int(rows.sum())})")  # fmt: skip
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=3, loc="best")


def segment_figures(result, inputs, job, folder: Path) -> dict[str, Path]:
    """Elbow, quality curves, the k-selection criteria side by side, 2-D PCA and t-SNE maps (of
    the people with a segment), profile heat map, stability and (when a previous run exists)
    migration; PNG files in ``folder``, returned by name."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    plt = _plt()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    segmenter, figures = result.segmenter, {}
    report = segmenter.report

    def save(fig, name: str) -> None:
        fig.tight_layout()
        figures[name] = folder / f"{name}.png"
        fig.savefig(figures[name], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for curve in report.curves:
        if len(curve.ks) > 1:
            ax.plot(curve.ks, curve.values["inertia"], marker="o", label=curve.algorithm)
            ax.axvline(curve.knee_k, ls=":", color="grey")
    ax.set_xlabel("k")
    ax.set_ylabel("within-segment sum of squares")
    ax.set_title(f"elbow (knee dotted); chosen k = {report.k_selected} ({report.algorithm})")
    ax.legend()
    save(fig, "elbow")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, measure in zip(
        axes, ("silhouette", "davies_bouldin", "calinski_harabasz"), strict=True
    ):
        for curve in report.curves:
            ax.plot(curve.ks, curve.values[measure], marker="o", label=curve.algorithm)
        ax.axvline(report.k_selected, ls="--", color="black", lw=0.8)
        ax.set_xlabel("k")
        better = "lower" if measure == "davies_bouldin" else "higher"
        ax.set_title(f"{measure} ({better} is better)")
    axes[0].legend()
    save(fig, "silhouette")

    criteria_figure(report, save)

    x = inputs.numeric.to_numpy(dtype=float)[result.fit_rows]
    z, labels = segmenter.preprocessor.transform(x), segmenter.assignments
    assigned = labels >= 0
    z, labels = z[assigned], labels[assigned]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    pca = PCA(n_components=2, random_state=0).fit(z)
    share = pca.explained_variance_ratio_.sum()
    _scatter(ax, pca.transform(z), labels, segmenter.labels, f"PCA 2-D ({share:.0%} of variance)")
    save(fig, "pca_map")

    rng = np.random.default_rng(job.segmenter.seed)
    rows = np.sort(rng.choice(len(z), min(len(z), job.tsne_sample), replace=False))
    embedded = TSNE(n_components=2, init="pca", perplexity=min(30, len(rows) // 4),
                    random_state=job.segmenter.seed).fit_transform(z[rows])  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 5.5))
    _scatter(ax, embedded, labels[rows], segmenter.labels, f"t-SNE of {len(rows)} users")
    save(fig, "tsne_map")

    features = list(dict.fromkeys(f for p in segmenter.profiles for f in p.top_features))
    heat = np.array([[p.z[f] for f in features] for p in segmenter.profiles])
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(features), 1.2 + 0.45 * len(heat)))
    image = ax.imshow(heat, cmap="RdBu_r", vmin=-3, vmax=3, aspect="auto")
    ax.set_xticks(range(len(features)), features, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(heat)), segmenter.labels, fontsize=8)
    fig.colorbar(image, ax=ax, label="z vs population")
    ax.set_title("segment profiles (defining features)")
    save(fig, "profiles")

    if result.stability:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        seeds = [str(seed) for seed, _ in result.stability]
        ax.bar(seeds, [a for _, a in result.stability], color="tab:blue")
        ax.axhline(0.9, ls="--", color="red", label="0.9 target")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"seed (reference seed {job.segmenter.seed})")
        ax.set_ylabel("users under the same segment")
        ax.set_title("stability after Hungarian matching")
        ax.legend(loc="lower right")
        save(fig, "stability")

    if result.migration is not None:
        matrix = result.migration
        fig, ax = plt.subplots(figsize=(2 + 0.8 * matrix.shape[1], 1.5 + 0.5 * matrix.shape[0]))
        ax.imshow(matrix.to_numpy(), cmap="Blues", aspect="auto")
        for (i, j), count in np.ndenumerate(matrix.to_numpy()):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
        ax.set_xlabel("now")
        ax.set_ylabel("previous run")
        ax.set_title("migration between runs")
        save(fig, "migration")
    return figures


#: The k-selection criteria side by side: (measure, title, better).
CRITERIA_PANELS = (
    ("silhouette", "silhouette", "higher"),
    ("calinski_harabasz", "Calinski–Harabasz", "higher"),
    ("davies_bouldin", "Davies–Bouldin", "lower"),
    ("gap", "gap statistic (± s)", "1-SE rule"),
    ("bic", "GMM BIC (diagonal)", "lower"),
    ("stability", "stability across 80% subsamples (ARI)", "higher"),
)


def criteria_figure(report, save) -> None:
    """One panel per criterion over k, each criterion's own k marked (triangle) and the chosen
    k dashed: the plot behind the combined rule (``k_criteria.png``)."""
    plt = _plt()
    curves = [c for c in report.curves if len(c.ks) > 1]
    if not curves:
        return
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (measure, title, better) in zip(axes.ravel(), CRITERIA_PANELS, strict=True):
        for curve in curves:
            if measure not in curve.values:
                continue
            values = np.asarray(curve.values[measure], dtype=float)
            if measure == "gap":
                ax.errorbar(curve.ks, values, yerr=curve.values["gap_se"], marker="o",
                            capsize=3, label=curve.algorithm)  # fmt: skip
            else:
                ax.plot(curve.ks, values, marker="o", label=curve.algorithm)
            if measure in curve.votes:
                k = curve.votes[measure]
                ax.plot([k], [values[curve.ks.index(k)]], marker="v", ms=12, color="red")
        ax.axvline(report.k_selected, ls="--", color="black", lw=0.8)
        ax.set_xlabel("k")
        ax.set_title(f"{title} ({better})", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    reason = next((c.reason for c in curves if c.algorithm == report.algorithm), "")
    fig.suptitle(f"k selection: chosen k = {report.k_selected} ({report.algorithm}; {reason}); "
                 "red triangle = each criterion's own k", fontsize=10)  # fmt: skip
    save(fig, "k_criteria")


def _markdown(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    lines = [head, rule]
    for row in frame.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(result, path: Path, title: str, commands: list[str], notes: list[str]) -> Path:
    """A Markdown result file with the segment table, tests, merges, stability and figures
    (copied into ``<path stem>/`` beside it); its first line is the command(s) that wrote it."""
    import shutil

    path = Path(path)
    folder = path.parent / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    report = result.segmenter.report
    lines = [result_files.generated_by(" && ".join(commands)), ""]
    lines += [f"# {title}", "", "Produced by:", "", "```bash", *commands, "```", "", *notes, ""]
    quality = ", ".join(f"{k} {v:.4g}" for k, v in report.quality.items())
    lines += [
        f"Algorithm **{report.algorithm}**, k chosen by {result.segmenter.config.criterion}: "
        f"{report.k_selected}; after consolidation: {len(result.segmenter.labels)} segments "
        f"({len(report.merges)} merges). Fitted on {len(result.fit_rows)} users. "
        f"Final quality: {quality}.",
        "",
    ]
    if result.ari is not None:
        lines += [f"Adjusted Rand index against the planted personas (noise users left out): "
                  f"**{result.ari:.4f}**.", ""]  # fmt: skip
        if result.coverage:
            shares = ", ".join(f"{k.replace('_', ' ')} {v:.1%}" for k, v in result.coverage.items())
            lines += [f"Against the truth: {shares}.", ""]
    table = result.table.drop(columns=["description"])
    lines += ["## Segments", "", _markdown(table), ""]
    tests = result.tests.assign(passes=result.tests["p_value"] < result.segmenter.config.alpha)
    lines += [f"## Significance across segments (alpha = {result.segmenter.config.alpha})", "",
              _markdown(tests), ""]  # fmt: skip
    lines += ["## Merges (over-segmentation guard)", ""]
    lines += [_markdown(result.merges) if len(result.merges) else "No merge was needed.", ""]
    if report.unassigned:
        lines += [f"Unclassified (fit no segment, outlier option): {report.unassigned} of "
                  f"{len(result.fit_rows)} fitted people.", ""]  # fmt: skip
    for curve in report.curves:
        frame = pd.DataFrame({"k": curve.ks, **curve.values})
        votes = ", ".join(f"{name} {k}" for name, k in curve.votes.items())
        lines += [f"## k selection: {curve.algorithm} (chosen {curve.chosen_k}: "
                  f"{curve.reason or curve.criterion}; knee {curve.knee_k})", ""]  # fmt: skip
        if votes:
            lines += [f"Each criterion's own k: {votes}.", ""]
        lines += [_markdown(frame), ""]
    if result.stability:
        lines += ["## Stability (same data, other seeds, Hungarian-matched)", ""]
        lines += [f"- seed {seed}: {share:.4f} of users under the same segment"
                  for seed, share in result.stability] + [""]  # fmt: skip
    if result.migration is not None:
        migration = _markdown(result.migration.reset_index())
        lines += ["## Migration from the previous run", "", migration, ""]
    lines += ["## Figures", ""]
    for name, figure in result.figures.items():
        target = folder / figure.name
        shutil.copy(figure, target)
        lines += [f"![{name}]({folder.name}/{target.name})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
