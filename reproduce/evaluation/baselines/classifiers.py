"""The two base classifiers of the paper's baselines, on support patch features: 1-NN by L2
distance (the first author, upstream issue lzzcd001/OSLSM #11) and logistic regression
(scikit-learn's LogisticRegression: L2 penalty, C = 1, lbfgs; features standardised with the
supports' mean and deviation, as its documentation advises for lbfgs)."""
from __future__ import annotations

import numpy as np

LOGREG_C = 1.0


def nearest_neighbour(support: np.ndarray, labels: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Each query feature gets the label of its nearest support feature (L2; the first on a tie);
    all 0 when there is no support feature."""
    if len(support) == 0:
        return np.zeros(len(query))
    s, q = np.asarray(support, np.float64), np.asarray(query, np.float64)
    distances = (q * q).sum(1)[:, None] - 2.0 * q @ s.T + (s * s).sum(1)[None, :]
    return np.asarray(labels, np.float64)[np.argmin(distances, axis=1)]


def logistic_regression(support: np.ndarray, labels: np.ndarray, query: np.ndarray, c: float = LOGREG_C) -> np.ndarray:
    """P(foreground) of each query feature; a support set of one class gives that class everywhere."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels)
    if len(support) == 0 or labels.min() == labels.max():
        return np.full(len(query), float(labels[0]) if len(support) else 0.0)
    scaler = StandardScaler().fit(np.asarray(support, np.float64))
    model = LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(np.asarray(support, np.float64)), labels)
    return model.predict_proba(scaler.transform(np.asarray(query, np.float64)))[:, 1]
