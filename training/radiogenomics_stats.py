"""Statistics of training/radiogenomics.py: the association tests, ROC AUC, Spearman, per-row
feature access and the whole analysis (no models, no files).

Each feature is split at its median (over the patients with that subtype known) and tested
against each genomic cluster column of data.csv with Fisher's exact test on the 2 x k table
(Freeman-Halton: exact enumeration of all tables with the same margins), two-sided; the paper
(Buda et al. 2019) counts 10 hypotheses and calls p < 0.05/10 significant.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import gammaln

from napari_lggseg import shape

FEATURES = shape.THREE_FEATURES
SHORT = {
    "bounding_ellipsoid_volume_ratio": "BEVR",
    "angular_sd": "angular SD",
    "margin_fluctuation": "margin fluctuation",
}
SUBTYPES = (
    "RNASeqCluster",
    "MethylationCluster",
    "miRNACluster",
    "CNCluster",
    "COCCluster",
    "OncosignCluster",
    "RPPACluster",
)
PAPER_HYPOTHESES = 10
PAPER_ALPHA = 0.05 / PAPER_HYPOTHESES
SHIPPED = "lgg-fast"

# --------------------------------------------------------------------------- statistics


def fisher_exact_2xk(table) -> float:
    """Two-sided exact p of a 2 x k contingency table (Freeman-Halton): the probability, under
    fixed margins, of all tables no more likely than the observed one. Equals
    scipy.stats.fisher_exact for 2 x 2."""
    t = np.asarray(table, dtype=np.int64)
    t = t[:, t.sum(axis=0) > 0]
    if t.shape[0] != 2 or t.shape[1] < 2 or t[0].sum() == 0 or t[1].sum() == 0:
        return 1.0
    cols, r1, n = t.sum(axis=0), int(t[0].sum()), int(t.sum())

    def log_choose(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    grids = np.meshgrid(*[np.arange(c + 1) for c in cols[:-1]], indexing="ij")
    first = np.stack([g.ravel() for g in grids], axis=1)
    last = r1 - first.sum(axis=1)
    ok = (last >= 0) & (last <= cols[-1])
    rows = np.column_stack([first[ok], last[ok]])
    logp = log_choose(cols, rows).sum(axis=1) - log_choose(n, r1)
    observed = log_choose(cols, t[0]).sum() - log_choose(n, r1)
    return float(min(1.0, np.exp(logp[logp <= observed + 1e-7]).sum()))


def association(values, groups) -> dict | None:
    """Feature split at its median vs the groups: table, p, n; None with < 2 groups."""
    pairs = [(v, g) for v, g in zip(values, groups) if v is not None and g not in (None, "")]
    if len({g for _, g in pairs}) < 2:
        return None
    v = np.array([p[0] for p in pairs], float)
    labels = sorted({p[1] for p in pairs}, key=lambda s: (len(s), s))
    high = v > np.median(v)
    table = [[int(np.sum(high & (np.array([p[1] for p in pairs]) == g))) for g in labels]]
    table.insert(0, [int(np.sum(np.array([p[1] for p in pairs]) == g)) - table[0][i]
                     for i, g in enumerate(labels)])  # fmt: skip
    return {"n": len(pairs), "labels": labels, "table": table, "p": fisher_exact_2xk(table)}


def auc(scores_pos, scores_neg) -> float | None:
    """P(a positive scores higher than a negative), ties half: the ROC AUC."""
    if len(scores_pos) == 0 or len(scores_neg) == 0:
        return None
    u = stats.mannwhitneyu(scores_pos, scores_neg, alternative="two-sided").statistic
    return float(u / (len(scores_pos) * len(scores_neg)))


def spearman(a, b) -> tuple[float | None, int]:
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 3:
        return None, len(pairs)
    rho = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return float(rho), len(pairs)


# --------------------------------------------------------------------------- analysis


def feature_values(rows, source: str, feature: str) -> list:
    """Per row: the feature on the expert or automatic mask; ``paired``: the expert value only
    where there is an automatic one (the same patients, for a fair comparison)."""
    if source == "paired":
        return [(r["expert"] or {}).get(feature) if r["auto"] else None for r in rows]
    return [(r[source] or {}).get(feature) for r in rows]


def analyse(rows, clinical: dict) -> dict:
    """Every test of the report: associations, Spearman, AUC, Dice, on ``rows``."""
    groups = {s: [(clinical.get(r["patient"]) or {}).get(s) for r in rows] for s in SUBTYPES}
    subtypes = [s for s in SUBTYPES if len({g for g in groups[s] if g}) >= 2]
    assoc = {
        (src, f, s): association(feature_values(rows, src, f), groups[s])
        for src in ("expert", "paired", "auto")
        for f in FEATURES
        for s in subtypes
    }
    shipped_rows = [r for r in rows if r["model"] == SHIPPED]
    rho = {
        (scope, f): spearman(feature_values(rs, "expert", f), feature_values(rs, "auto", f))
        for scope, rs in (("all", rows), ("shipped", shipped_rows))
        for f in FEATURES
    }
    rna = groups["RNASeqCluster"]
    clusters = sorted({g for g in rna if g}, key=lambda s: (len(s), s))
    aucs = {}
    for src in ("expert", "paired", "auto"):
        for f in FEATURES:
            v = feature_values(rows, src, f)
            for c in clusters:
                pos = [x for x, g in zip(v, rna) if x is not None and g == c]
                neg = [x for x, g in zip(v, rna) if x is not None and g and g != c]
                aucs[(src, f, c)] = auc(pos, neg)
    paired = [bool(r["auto"]) for r in rows]
    cluster_n = {c: (sum(g == c for g in rna), sum(g == c and a for g, a in zip(rna, paired)))
                 for c in clusters}  # fmt: skip
    dice = {
        scope: [r["dice"] for r in rs if r["dice"] is not None]
        for scope, rs in (
            ("all", rows),
            ("shipped", shipped_rows),
            ("folds", [r for r in rows if r["model"] not in (None, SHIPPED)]),
        )
    }
    return {"subtypes": subtypes, "assoc": assoc, "rho": rho, "auc": aucs, "clusters": clusters,
            "dice": dice, "groups": groups, "cluster_n": cluster_n}  # fmt: skip
