"""``upweight demo``: fit a logistic regression to the bundled breast-cancer data, report which
training points most help and most hurt the worst-predicted test points, check them against
exact leave-one-out refits, and write figures (response curve, leave-one-out scatter, and a
gallery of the digits that most help and hurt a misclassified handwritten digit).

Written against the public API only, as a user would (``import upweight as uw``).
"""

from __future__ import annotations

import argparse

import numpy as np

import upweight as uw
from upweight import plots


def run(args: argparse.Namespace) -> int:
    """``upweight demo``: the report, then (with ``args.plots``) the figures."""
    X, y, names = uw.load_breast_cancer()
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(y))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    mu, sd = X[train].mean(axis=0), X[train].std(axis=0)
    Z = (X - mu) / sd  # standardise with training statistics
    Xtr, ytr, Xte, yte = Z[train], y[train], Z[test], y[test]

    model = uw.LogisticRegression(l2=args.l2).fit(Xtr, ytr)
    acc = float(np.mean(model.predict(Xte) == yte))
    print("upweight demo: breast cancer (Wisconsin diagnostic, UCI, CC BY 4.0); y = 1 benign")
    print(f"  binary logistic regression, l2 = {args.l2:g}, {len(train)} training / {len(test)} test points, "
          f"{Xtr.shape[1]} standardised features")
    print(f"  Newton: {model.n_iter_} iterations, gradient norm {model.grad_norm_:.1e}; test accuracy {acc:.3f}")

    inf = uw.Influence(model, Xtr, ytr)
    test_loss = model.loss(Xte, yte)
    worst = np.argsort(-test_loss)[: args.queries]
    S = inf.on_loss(Xte[worst], yte[worst])  # (queries, n_train)
    p_train = model.predict_proba(Xtr)[:, 1]
    self_inf = inf.self_influence()

    def row(m: int, score: float) -> str:
        return (f"    train {'#' + str(train[m]):<5} label {ytr[m]}  p(benign) {p_train[m]:.3f}  "
                f"score {score:+.2e}  self-influence {self_inf[m]:+.2e}")

    for j, t in enumerate(worst):
        p_t = model.predict_proba(Xte[t : t + 1])[0, 1]
        print(f"\nTest point #{test[t]} (label {yte[t]}, p(benign) = {p_t:.3f}, loss {test_loss[t]:.3f})")
        order = np.argsort(S[j])
        print("  most helpful training points (upweighting them lowers this loss):")
        for m in order[: args.top]:
            print(row(m, S[j, m]))
        print("  most harmful training points (upweighting them raises this loss):")
        for m in order[::-1][: args.top]:
            print(row(m, S[j, m]))

    # Check against exact leave-one-out refits: the worst test point's listed points, then a
    # sample of training points against every test loss.
    t = worst[0]
    listed = np.r_[np.argsort(S[0])[: args.top], np.argsort(S[0])[::-1][: args.top]]
    loo = uw.leave_one_out(model, Xtr, ytr, idx=listed, X_test=Xte[t : t + 1], y_test=yte[t : t + 1])
    print(f"\nCheck against exact refits without each listed point (test #{test[t]}):")
    print("    train    predicted change of loss   actual (refit)")
    assert loo.predicted_loss is not None and loo.actual_loss is not None  # X_test was given
    for m, pr, ac in zip(listed, loo.predicted_loss[:, 0], loo.actual_loss[:, 0], strict=True):
        print(f"    #{train[m]:<6} {pr:+24.5f} {ac:+16.5f}")
    sample = rng.choice(len(ytr), size=min(100, len(ytr)), replace=False)
    wide = uw.leave_one_out(model, Xtr, ytr, idx=sample, X_test=Xte, y_test=yte)
    c = uw.compare(wide.predicted_loss, wide.actual_loss)
    print(f"  {len(sample)} training points x {len(yte)} test losses: Pearson R {c.pearson:.4f}, "
          f"Spearman {c.spearman:.4f}, slope {c.slope:.3f} (actual on predicted)")
    flagged = np.argsort(self_inf)[: args.top]
    print("Most self-influential training points (candidates for label noise): "
          + ", ".join(f"#{train[m]} (label {ytr[m]}, p {p_train[m]:.2f})" for m in flagged))
    if args.plots:
        _plots(args, model, inf, Xtr, ytr, Xte, yte, t, int(np.argmax(S[0])), wide, train, test)
    return 0


def _plots(args, model, inf, Xtr, ytr, Xte, yte, t, m, wide, train, test) -> None:
    """PNG figures beside the report: response curve, leave-one-out scatter, digits gallery."""
    if not plots.ready(args.plots):
        return
    written = []
    rc = uw.response_curve(model, Xtr, ytr, m=m, eps=np.linspace(-1.0, 4.0, 11), f=uw.TestLoss(Xte[t : t + 1], yte[t : t + 1]))
    fig = plots.response_curve(rc, label=f"loss at test #{test[t]}")
    fig.axes[0].set_xlabel(f"eps (weight added to train #{train[m]})")
    written.append(plots.save(fig, args.plots, "response_curve.png"))
    scatter = plots.loo_scatter(wide.predicted_loss, wide.actual_loss, one_step=wide.one_step_loss)
    written.append(plots.save(scatter, args.plots, "leave_one_out.png"))
    # digits: a misclassified test image and the training images that most help and hurt it
    Xd, yd = uw.load_digits()
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(yd))
    te, tr = perm[:300], perm[300:]
    digits = uw.LogisticRegression(l2=args.l2).fit(Xd[tr] / 16, yd[tr])
    pred = digits.predict(Xd[te] / 16)
    wrong = np.flatnonzero(pred != yd[te])
    q = int(wrong[0]) if wrong.size else 0
    top = uw.Influence(digits, Xd[tr] / 16, yd[tr]).top_k(Xd[te][q : q + 1] / 16, yd[te][q : q + 1], k=6)
    fig = plots.gallery(
        Xd[te][q], Xd[tr][top.helpful_idx[0]], Xd[tr][top.harmful_idx[0]],
        query_title=f"test: {yd[te][q]} (predicted {pred[q]})",
        helpful_titles=[f"helps: {yd[tr][i]}" for i in top.helpful_idx[0]],
        harmful_titles=[f"hurts: {yd[tr][i]}" for i in top.harmful_idx[0]],
    )
    written.append(plots.save(fig, args.plots, "digits_gallery.png"))
    print("\nFigures: " + ", ".join(written))
