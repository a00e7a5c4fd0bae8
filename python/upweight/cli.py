"""Command line interface: ``upweight demo`` and ``upweight seed``.

``upweight demo`` fits a logistic regression to the bundled breast-cancer data and reports which
training points most help and most hurt the worst-predicted test points, checking the top
influence against an exact refit without that point.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def _demo(args: argparse.Namespace) -> int:
    import upweight as uw

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
        print(f"  most helpful training points (upweighting them lowers this loss):")
        for m in order[: args.top]:
            print(row(m, S[j, m]))
        print(f"  most harmful training points (upweighting them raises this loss):")
        for m in order[::-1][: args.top]:
            print(row(m, S[j, m]))

    # Check the strongest harmful point of the worst test point against an exact refit.
    t, m = worst[0], int(np.argmax(S[0]))
    keep = np.ones(len(ytr), dtype=bool)
    keep[m] = False
    refit = uw.LogisticRegression(l2=args.l2).fit(Xtr[keep], ytr[keep])
    actual = float(refit.loss(Xte[t : t + 1], yte[t : t + 1])[0] - test_loss[t])
    predicted = -float(S[0, m])
    print(f"\nCheck: removing train #{train[m]} changes the loss of test #{test[t]} by {actual:+.4f} "
          f"(exact refit); influence predicts {predicted:+.4f}.")
    flagged = np.argsort(self_inf)[: args.top]
    print(f"Most self-influential training points (candidates for label noise): "
          + ", ".join(f"#{train[m]} (label {ytr[m]}, p {p_train[m]:.2f})" for m in flagged))
    return 0


def _seed(args: argparse.Namespace) -> int:
    from .examples import seed_example

    print(seed_example().report())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="upweight",
        description="Exact influence functions for weighted GLMs: which training points help or hurt a prediction.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="fit the bundled breast-cancer data and show the training points that most help and hurt the worst test predictions",
        description="Fit binary logistic regression to the bundled breast-cancer data (80/20 split), then for the "
        "worst-predicted test points list the training points whose upweighting most lowers (helps) and "
        "most raises (hurts) their loss, and check one against an exact refit.",
    )
    demo.add_argument("--l2", type=float, default=1e-2, help="ridge penalty on the coefficients (default 0.01)")
    demo.add_argument("--queries", type=int, default=3, help="how many worst-predicted test points to explain (default 3)")
    demo.add_argument("--top", type=int, default=5, help="how many helpful / harmful training points to list (default 5)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
    demo.set_defaults(func=_demo)
    seed = sub.add_parser(
        "seed",
        help="print the three-point worked example (fitted line, influence, influence on each loss)",
        description="The worked example of the README: points (0,0), (1,1.5), (2,2), squared loss, y = m x + b.",
    )
    seed.set_defaults(func=_seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import UpweightError

    try:
        return args.func(args)
    except UpweightError as exc:
        print(f"upweight: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("upweight: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
