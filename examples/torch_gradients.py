"""Per-example gradients of a small PyTorch model (torch.func), fed to upweight.

    pip install torch && python examples/torch_gradients.py

upweight never imports torch: it only sees the (n, p) gradient arrays.
"""

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

import upweight as uw

torch.manual_seed(0)
n, d, h = 512, 10, 16
X = torch.randn(n, d)
y = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.5).long()
net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, 2))
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for _ in range(300):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(X), y).backward()
    opt.step()

params = {k: v.detach() for k, v in net.named_parameters()}


def loss(p, x, t):
    return torch.nn.functional.cross_entropy(functional_call(net, p, (x[None],)), t[None])


def per_example_grads(Xs, ys):
    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, Xs, ys)
    return torch.cat([v.reshape(len(Xs), -1) for v in g.values()], dim=1).double().numpy()


G_train = per_example_grads(X, y)  # (n, p), p = 16*10 + 16 + 2*16 + 2 = 210
X_test = torch.randn(4, d)
y_test = (X_test[:, 0] + 0.5 * X_test[:, 1] ** 2 > 0.5).long()
G_test = per_example_grads(X_test, y_test)

# Damped empirical-Fisher influence: damping is the PBRF's proximity term (Bae et al. 2022).
inf = uw.GradientInfluence(G_train, damping=1e-3)
top = inf.top_k(G_test, k=5)
for t in range(len(G_test)):
    print(f"test {t}: most helpful {top.helpful_idx[t].tolist()}  most harmful {top.harmful_idx[t].tolist()}")
assert np.isfinite(inf.self_influence()).all()
