"""Which training points help or hurt a misclassified test point? A walkthrough on the bundled
breast-cancer data, checked against exact leave-one-out refits (docs/glms.md shows its output).

    python examples/walkthrough.py
"""

import numpy as np

import upweight as uw

X, y, names = uw.load_breast_cancer()
rng = np.random.default_rng(0)
test = rng.choice(len(y), 100, replace=False)
train = np.setdiff1d(np.arange(len(y)), test)
mu, sd = X[train].mean(0), X[train].std(0)
Xtr, ytr, Xte, yte = (X[train] - mu) / sd, y[train], (X[test] - mu) / sd, y[test]

model = uw.LogisticRegression(l2=1e-2).fit(Xtr, ytr)
wrong = np.flatnonzero(model.predict(Xte) != yte)
t = wrong[np.argmax(model.loss(Xte[wrong], yte[wrong]))]  # the worst misclassified test point
print(f"test point {test[t]}: label {yte[t]}, p(benign) = {model.predict_proba(Xte[t:t + 1])[0, 1]:.3f}")

inf = uw.Influence(model, Xtr, ytr)
top = inf.top_k(Xte[t:t + 1], yte[t:t + 1], k=3)
for kind, idx, score in (("helpful", top.helpful_idx[0], top.helpful[0]), ("harmful", top.harmful_idx[0], top.harmful[0])):
    print(f"most {kind}: " + ", ".join(f"#{train[m]} (label {ytr[m]}, S = {s:+.4f})" for m, s in zip(idx, score, strict=True)))

# removing a point changes the loss by about -S[t, m]; check with exact refits
listed = np.r_[top.helpful_idx[0], top.harmful_idx[0]]
loo = uw.leave_one_out(model, Xtr, ytr, idx=listed, X_test=Xte[t:t + 1], y_test=yte[t:t + 1])
for m, p, a in zip(listed, loo.predicted_loss[:, 0], loo.actual_loss[:, 0], strict=True):
    print(f"  remove #{train[m]}: predicted {p:+.4f}, refit {a:+.4f}")

# every training point against every test loss
loo = uw.leave_one_out(model, Xtr, ytr, X_test=Xte, y_test=yte)
c = uw.compare(loo.predicted_loss, loo.actual_loss)
print(f"all {len(ytr)} x {len(yte)} leave-one-out changes: Pearson {c.pearson:.3f}, Spearman {c.spearman:.3f}, slope {c.slope:.2f}")
