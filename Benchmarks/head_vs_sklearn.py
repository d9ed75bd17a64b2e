#!/usr/bin/env python3
"""Accuracy and wall time of scikit-learn's LogisticRegression on `featstream extract` output.

The reference for `featstream bench train`: same features, same standardization, same objective.
Our `l2` and scikit-learn's `C` describe the same objective when C = 1 / (l2 * n_train)
(scikit-learn minimises 0.5*||W||^2 + C * sum_i CE_i; HeadTraining minimises
mean_i CE_i + l2/2 * ||W||^2, the former divided by C * n_train).

    python3 Benchmarks/head_vs_sklearn.py --train /tmp/ht-train --test /tmp/ht-val --l2 1e-3
    featstream bench train --train /tmp/ht-train --test /tmp/ht-val --l2 1e-3

Prints one JSON line. `seconds` covers StandardScaler.fit/transform of the training set plus
LogisticRegression.fit, the same span the Swift side times; reported as the minimum and the
median over --repeats runs. With --cv it fits LogisticRegressionCV with its own defaults (tol 1e-4,
max_iter raised to --max-iter), the reference for the default head of `featstream bench train`
without --l2.
"""
import argparse
import csv
import json
import os
import statistics
import time
import warnings

import numpy as np


def load(folder):
    """features.npy rows with the labels metadata.csv gives them (matched on its `row` column)."""
    features = np.load(os.path.join(folder, "features.npy")).astype(np.float32, copy=False)
    if features.ndim != 2:
        raise SystemExit(f"{folder}/features.npy: expected [rows, dimension], got {features.shape}")
    labels = np.full(features.shape[0], -1, dtype=np.int64)
    with open(os.path.join(folder, "metadata.csv"), newline="") as handle:
        for record in csv.DictReader(handle):
            labels[int(record["row"])] = int(record["label"])
    if (labels < 0).any():
        raise SystemExit(f"{folder}: feature row {int(np.argmax(labels < 0))} has no metadata line")
    return features, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="extract output folder for training")
    parser.add_argument("--test", required=True, help="extract output folder for testing")
    parser.add_argument("--l2", type=float, default=1e-4, help="HeadTraining l2; C = 1/(l2*n_train)")
    parser.add_argument("--tol", type=float, default=1e-5,
                        help="lbfgs max-abs gradient tolerance; 1e-5 matches HeadTraining's default "
                             "(sklearn's own default 1e-4 stops before predictions settle)")
    parser.add_argument("--max-iter", type=int, default=1000,
                        help="lbfgs iterations (sklearn's default 100 often stops before convergence)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cv", action="store_true",
                        help="LogisticRegressionCV (its defaults: 10 Cs from 1e-4 to 1e4, 5 stratified folds, accuracy, "
                             "refit on all training rows) instead of one C; --l2 is ignored")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS threads (needs threadpoolctl); default: all cores")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler
    from sklearn.exceptions import ConvergenceWarning

    x_train, y_train = load(args.train)
    x_test, y_test = load(args.test)
    c = 1.0 / (args.l2 * x_train.shape[0])

    if args.threads is not None:
        # Held for the whole run; numpy's and scipy's BLAS pools are both limited.
        from threadpoolctl import threadpool_limits
        global _blas_limit
        _blas_limit = threadpool_limits(limits=args.threads)

    times, converged = [], True
    for _ in range(args.repeats):
        start = time.perf_counter()
        scaler = StandardScaler().fit(x_train)
        xs = scaler.transform(x_train)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if args.cv:
                model = LogisticRegressionCV(solver="lbfgs", max_iter=args.max_iter).fit(xs, y_train)
            else:
                model = LogisticRegression(C=c, solver="lbfgs", tol=args.tol, max_iter=args.max_iter).fit(xs, y_train)
        times.append(time.perf_counter() - start)
        converged = converged and not any(issubclass(w.category, ConvergenceWarning) for w in caught)

    accuracy = float((model.predict(scaler.transform(x_test)) == y_test).mean())
    if args.cv:
        c = float(model.C_[0])
        args.l2 = 1.0 / (c * x_train.shape[0])
    # The objective in HeadTraining's scale, to compare the optimum reached.
    probabilities = model.predict_proba(xs)
    cross_entropy = float(-np.log(probabilities[np.arange(len(y_train)), np.searchsorted(model.classes_, y_train)]).mean())
    objective = cross_entropy + 0.5 * args.l2 * float((model.coef_.astype(np.float64) ** 2).sum())
    print(json.dumps({
        "impl": "sklearn-cv" if args.cv else "sklearn", "accuracy": round(accuracy, 4),
        "seconds_min": round(min(times), 4), "seconds_median": round(statistics.median(times), 4),
        "iterations": int(np.max(model.n_iter_)), "converged": converged,
        "train_loss": round(cross_entropy, 6), "objective": round(objective, 6),
        "C": c, "l2": args.l2, "train_rows": int(x_train.shape[0]), "test_rows": int(x_test.shape[0]),
        "dimension": int(x_train.shape[1]),
    }))


if __name__ == "__main__":
    main()
