"""People who fit no segment: a Gaussian-mixture posterior cut (label ``-1``, "Unclassified").

After the segments are found, a tied-covariance Gaussian mixture is started at their centroids
and fitted on the same rows. A person whose most likely segment has a posterior below
``threshold`` sits between segments (a mix of behaviours, the generator's noise users) and is
left unassigned instead of being forced into one. On the planted data the noise users are not
unusually *far* from every segment (their shares average out near the middle), so a
low-likelihood cut misses them; a low posterior finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

UNASSIGNED = -1


@dataclass(frozen=True)
class OutlierModel:
    """A fitted tied-covariance mixture: ``means`` (k, d), ``precision_cholesky`` (d, d),
    ``log_weights`` (k,), and the posterior a person needs to keep a segment."""

    means: np.ndarray
    precision_cholesky: np.ndarray
    log_weights: np.ndarray
    threshold: float

    def posterior(self, z: np.ndarray) -> np.ndarray:
        """(n, k) posterior of each segment for the rows of ``z`` (n, d)."""
        projected = z @ self.precision_cholesky
        centres = self.means @ self.precision_cholesky
        d2 = ((projected[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        log_joint = self.log_weights[None, :] - 0.5 * d2
        return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))

    def unassigned(self, z: np.ndarray) -> np.ndarray:
        """(n,) bool: no segment reaches the threshold."""
        return self.posterior(z).max(axis=1) < self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means,
            "precision_cholesky": self.precision_cholesky,
            "log_weights": self.log_weights,
            "threshold": np.array(self.threshold),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OutlierModel:
        return cls(
            np.asarray(arrays["means"]),
            np.asarray(arrays["precision_cholesky"]),
            np.asarray(arrays["log_weights"]),
            float(arrays["threshold"]),
        )


def fit_outlier_model(
    z: np.ndarray, labels: np.ndarray, threshold: float, seed: int
) -> OutlierModel:
    """Fit the mixture on the rows of ``z`` (n, d) with a segment, started at their centroids."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"outlier_posterior={threshold}; allowed: 0 < outlier_posterior < 1")
    assigned = labels >= 0
    k = int(labels[assigned].max()) + 1
    means = np.array([z[assigned & (labels == s)].mean(axis=0) for s in range(k)])
    gmm = GaussianMixture(
        k, covariance_type="tied", means_init=means, random_state=seed, reg_covar=1e-4
    ).fit(z[assigned])
    return OutlierModel(
        means=gmm.means_,
        precision_cholesky=gmm.precisions_cholesky_,
        log_weights=np.log(gmm.weights_),
        threshold=float(threshold),
    )
