"""``upweight demo --network``: train a small tanh network on the bundled 8x8 digits, show the
training images that most help and most hurt a misclassified test image, and check the listed
points against the proximal Bregman response (PBRF) that influence answers for a network
(DESIGN-networks.md section 3), with a gallery and a PBRF-vs-influence figure.

Written against the public API only, as a user would (``import upweight as uw``).
"""

from __future__ import annotations

import argparse

import numpy as np

import upweight as uw
from upweight import plots


def run(args: argparse.Namespace) -> int:
    X, y = uw.load_digits()
    X, y = X / 16.0, y.astype(float)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(y))
    test, train = perm[:400], perm[400:]
    Xtr, ytr, Xte, yte = X[train], y[train], X[test], y[test]
    net = uw.MLPClassifier(hidden=(16,), activation="tanh", l2=args.l2, random_state=args.seed).fit(Xtr, ytr)
    acc = net.score(Xte, yte)
    print("upweight demo --network: handwritten digits (UCI, CC BY 4.0), 8 x 8 pixels / 16")
    print(f"  MLP 64-16-10 tanh, softmax head, l2 = {args.l2:g}, {len(train)} training / {len(test)} test images")
    print(f"  trained to max |gradient| {net.grad_norm_:.1e} in {net.n_iter_} iterations (L-BFGS, then Newton); "
          f"test accuracy {acc:.3f}")
    inf = uw.Influence(net, Xtr, ytr)
    print(f"  influence: damped Gauss-Newton, damping {inf.damping:.2e} (0.1 x the mean eigenvalue of G)")

    pred = net.predict(Xte)
    loss = net.loss(Xte, yte)
    wrong = np.flatnonzero(pred != yte)
    t = int(wrong[np.argmax(loss[wrong])]) if wrong.size else int(np.argmax(loss))
    S = inf.on_loss(Xte[t : t + 1], yte[t : t + 1])[0]
    order = np.argsort(S)
    helpful, harmful = order[: args.top], order[::-1][: args.top]
    print(f"\nTest image #{test[t]}: a {int(yte[t])} predicted as {int(pred[t])} (loss {loss[t]:.3f})")
    for title, idx in (("most helpful (upweighting them lowers this loss)", helpful),
                       ("most harmful (upweighting them raises this loss)", harmful)):
        print(f"  {title}:")
        for m in idx:
            print(f"    train #{train[m]:<5} a {int(ytr[m])}  score {S[m]:+.2e}")

    # removal (eps = -1): influence predicts -S[t, m]; the PBRF is the response it is the
    # derivative of, solved exactly from the trained parameters
    listed = np.r_[helpful, harmful]
    sample = np.r_[listed, rng.choice(len(ytr), size=args.sample, replace=False)]
    responses = inf.pbrf(sample, -1.0)
    base = net.loss(Xte[t : t + 1], yte[t : t + 1])[0]
    actual = np.array([_loss_at(net, th, Xte[t], yte[t]) for th in responses]) - base
    predicted = -S[sample]
    c = uw.compare(predicted[:, None], actual[:, None])
    print(f"\nRemoving a training point: influence's prediction vs the PBRF's exact response (test #{test[t]})")
    print("    train    predicted change of loss   PBRF")
    for m, pr, ac in zip(sample[: len(listed)], predicted, actual, strict=False):
        print(f"    #{train[m]:<6} {pr:+24.5f} {ac:+10.5f}")
    print(f"  {len(sample)} training points (the listed ones and {args.sample} at random): Pearson R {c.pearson:.4f}, "
          f"Spearman {c.spearman:.4f}, slope {c.slope:.3f}")
    print("  (for a network influence answers the PBRF; retraining without the point is a different question: "
          "bench/RESULTS.md, 'Networks on digits')")
    if args.plots:
        _plots(args, Xte[t], yte[t], pred[t], Xtr, ytr, helpful, harmful, predicted, actual)
    return 0


def _loss_at(net, theta, x, y) -> float:
    """The loss at (x, y) with parameters theta (the network's own kernel)."""
    return float(net.core_model().losses(theta, x[None, :], np.array([y]))[0])


def _plots(args, x, y, pred, Xtr, ytr, helpful, harmful, predicted, actual) -> None:
    if not plots.ready(args.plots):
        return
    fig = plots.gallery(
        x * 16, Xtr[helpful] * 16, Xtr[harmful] * 16,
        query_title=f"test: {int(y)} (predicted {int(pred)})",
        helpful_titles=[f"helps: {int(ytr[i])}" for i in helpful],
        harmful_titles=[f"hurts: {int(ytr[i])}" for i in harmful],
    )
    written = [plots.save(fig, args.plots, "network_gallery.png")]
    fig = plots.loo_scatter(predicted, actual, what="change of test loss (PBRF removal)")
    written.append(plots.save(fig, args.plots, "network_pbrf.png"))
    print("\nFigures: " + ", ".join(written))
