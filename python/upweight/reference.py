"""Plain NumPy reference implementation of DESIGN.md sections 1-2, and (last section, ``mlp_*``) of the
multilayer perceptron of DESIGN-networks.md sections 1-3.

This module is the ground truth the test-suite compares the Rust core against, and it is
meant to be read as the mathematics.  It depends on NumPy only, favours clarity over speed,
but every per-example quantity is a matrix product (no Python loop over examples).

Notation
--------
Training set: rows x_i of ``X`` (n, d), targets y_i, weights w_i >= 0 (``w=None`` means all
ones), W = sum_i w_i.  The design matrix puts the intercept column LAST::

    Z = [X, 1]                                   (n, d+1),  z_i = [x_i, 1]

Parameters ``theta``:

* scalar families ("squared", "logistic", "poisson"): shape (d+1,) = [coef_1..coef_d, intercept],
  eta_i = z_i . theta.
* "multinomial" with k classes: shape (k, d+1), one row [coef..., intercept] per class,
  eta_i = Theta z_i in R^k.  Gradients, Hessians and influences use the row-major flattening
  ``theta.reshape(-1)`` of length p = k (d+1); the Hessian is (p, p) in that order.

Every function accepts ``theta`` either in its natural shape or flattened.

Objective (the ridge penalty sits outside the average, and is ``l2 * ||coef||^2``, not l2/2;
intercepts are never penalised)::

    L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||mask * theta||^2

where ``mask`` is 1 on coefficient entries and 0 on intercept entries.  Hence::

    grad L_w = (1/W) sum_i w_i grad l(z_i) + 2 l2 mask * theta
    H        = (1/W) sum_i w_i hess l(z_i) + 2 l2 diag(mask)

Families (z = [x, 1], sigma = logistic sigmoid)::

    family       l(z; theta)               per-example gradient     Hessian weight
    squared      (eta - y)^2               2 (eta - y) z            2
    logistic     log(1 + e^eta) - y eta    (sigma(eta) - y) z       sigma (1 - sigma)
    poisson      e^eta - y eta             (e^eta - y) z            e^eta
    multinomial  logsumexp(eta) - eta_y    (p - e_y) (x) z          (diag(p) - p p^T) (x) z z^T

For the scalar families H = (1/W) Z^T diag(w h) Z + 2 l2 diag(mask).

Influence (DESIGN.md section 1).  R_m(eps) = argmin of L_w with w_m replaced by w_m + eps.
Differentiating the optimality condition grad L_w(R_m(eps)) = 0 -- remembering that W also
grows by eps, which is where the penalty term comes from -- gives::

    I(z_m) = dR_m/d eps |_{eps=0} = -H^{-1} (grad l(z_m; theta*) + 2 l2 mask * theta*) / W

Sign convention: upweighting m by eps moves theta* by about eps * I(z_m); removing an
unweighted point moves it by about -I(z_m).  The influence on a differentiable f(theta) is
grad f(theta*) . I(z_m); for test points t the score matrix is
S[t, m] = grad l(z_t; theta*) . I(z_m), and S[t, m] < 0 means m is helpful to t.

Conversion to Koh & Liang (2017), who add eps * l(z_m) to the *mean* loss: their
I_up,params(z_m) = -H^{-1} grad l(z_m) equals W * I(z_m) here when l2 == 0 (and
I_up,loss(z_m, z_t) = W * S[t, m]).

Multinomial null direction.  Adding one constant to every class's intercept does not change
the softmax, so H is singular along that direction (with l2 == 0, adding the same vector to
every class's whole row is a null direction too).  This reference handles it the simplest
way: every linear solve with H, both in the Newton steps of :func:`fit` and in the influence
formulas, uses the Moore-Penrose pseudo-inverse H^+, computed from the symmetric eigen
decomposition with eigenvalues below ``PINV_RCOND * max eigenvalue`` treated as zero (see
:func:`_pinv_solve`).  H^+ returns the minimum-norm solution, which lies in range(H), the
orthogonal complement of the null directions.  Starting ``fit`` at zero, every Newton step
stays in that complement, so the fitted parameters have class-wise sums equal to zero
(intercepts sum to zero; with l2 == 0 the whole rows sum to zero), and the influences
I(z_m) = -H^+ (...) / W lie in the same subspace -- they are exactly the derivative of refits
computed the same way.  Influence on anything invariant to the null directions (predicted
probabilities, losses) does not depend on this choice.  The scalar families use
``np.linalg.solve`` and raise ``np.linalg.LinAlgError`` if H is singular.
"""

from __future__ import annotations

import math

import numpy as np

FAMILIES = ("squared", "logistic", "poisson", "multinomial")

#: relative eigenvalue cutoff of the pseudo-inverse used for the multinomial family
PINV_RCOND = 1e-10

__all__ = [
    "FAMILIES",
    "design",
    "linear_predictor",
    "mean_response",
    "losses",
    "per_example_grads",
    "objective",
    "gradient",
    "hessian",
    "hvp",
    "fit",
    "influence_params",
    "loo_one_step",
    "influence_new_point",
    "influence_on_loss",
    "influence_on",
    "self_influence",
]


# ---------------------------------------------------------------------------------------
# small helpers: argument checking, shapes, elementary functions
# ---------------------------------------------------------------------------------------


def _check_family(family):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def _as_X(X):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d), got shape {X.shape}")
    return X


def _as_theta(theta, d, family):
    """Return theta in its natural shape: (d+1,) or (k, d+1) for multinomial."""
    _check_family(family)
    theta = np.asarray(theta, dtype=np.float64)
    if family == "multinomial":
        if theta.size == 0 or theta.size % (d + 1) != 0:
            raise ValueError(f"multinomial theta of size {theta.size} is not k*(d+1) with d={d}")
        return theta.reshape(theta.size // (d + 1), d + 1)
    if theta.size != d + 1:
        raise ValueError(f"theta of size {theta.size} does not match d+1={d + 1}")
    return theta.reshape(d + 1)


def _as_y(y, n, family, k=None):
    y = np.asarray(y)
    if y.shape != (n,):
        y = y.reshape(-1)
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},), got {np.shape(y)}")
    if family == "multinomial":
        yi = y.astype(np.int64)
        if not np.array_equal(yi, y):
            raise ValueError("multinomial y must hold integer class ids")
        if n and (yi.min() < 0 or (k is not None and yi.max() >= k)):
            raise ValueError(f"multinomial y must be class ids in 0..{k - 1}")
        return yi
    return y.astype(np.float64)


def _as_w(w, n):
    """Weights as a float array, and their total W (which must be positive)."""
    if w is None:
        w = np.ones(n)
    else:
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.shape != (n,):
            raise ValueError(f"w must have shape ({n},), got {w.shape}")
    W = float(w.sum())
    if not W > 0:
        raise ValueError("the total weight W = sum(w) must be positive")
    return w, W


def _mask(theta_nat):
    """Penalty mask, same natural shape as theta: 1 on coefficients, 0 on intercepts."""
    m = np.ones_like(theta_nat)
    m[..., -1] = 0.0
    return m


def _sigmoid(t):
    """Numerically stable logistic sigmoid 1 / (1 + e^-t)."""
    return np.exp(-np.logaddexp(0.0, -t))


def _logsumexp_rows(A):
    """log sum_j exp(A[i, j]) for every row i, stably."""
    M = A.max(axis=1, keepdims=True)
    return (M + np.log(np.exp(A - M).sum(axis=1, keepdims=True)))[:, 0]


def _softmax_rows(A):
    E = np.exp(A - A.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _one_hot(y, k):
    E = np.zeros((y.shape[0], k))
    E[np.arange(y.shape[0]), y] = 1.0
    return E


def _pinv_solve(H, B, rcond=PINV_RCOND):
    """Minimum-norm solution H^+ B for symmetric positive semi-definite H.

    With H = Q diag(lam) Q^T, H^+ = Q diag(1/lam if lam > rcond * max(lam) else 0) Q^T.
    B may be (p,) or (p, r).
    """
    lam, Q = np.linalg.eigh(H)
    top = lam.max() if lam.size else 0.0
    if top <= 0:
        return np.zeros_like(np.asarray(B, dtype=np.float64))
    inv = np.zeros_like(lam)
    keep = lam > rcond * top
    inv[keep] = 1.0 / lam[keep]
    B = np.asarray(B, dtype=np.float64)
    if B.ndim == 1:
        return Q @ (inv * (Q.T @ B))
    return Q @ (inv[:, None] * (Q.T @ B))


def _solve(H, B, family):
    """H^{-1} B (np.linalg.solve), or H^+ B for the multinomial family (see module doc)."""
    if family == "multinomial":
        return _pinv_solve(H, B)
    return np.linalg.solve(H, B)


# ---------------------------------------------------------------------------------------
# the model: linear predictor, mean, per-example loss and gradient
# ---------------------------------------------------------------------------------------


def design(X):
    """Design matrix Z = [X, 1] of shape (n, d+1), intercept column last."""
    X = _as_X(X)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def linear_predictor(theta, X, family):
    """eta = Z theta: shape (n,) for scalar families, (n, k) (eta_i = Theta z_i) for multinomial."""
    Z = design(X)
    theta = _as_theta(theta, Z.shape[1] - 1, family)
    if family == "multinomial":
        return Z @ theta.T
    return Z @ theta


def mean_response(theta, X, family):
    """Inverse link of eta: identity (squared), sigmoid (logistic), exp (poisson), softmax (multinomial)."""
    eta = linear_predictor(theta, X, family)
    if family == "squared":
        return eta
    if family == "logistic":
        return _sigmoid(eta)
    if family == "poisson":
        return np.exp(eta)
    return _softmax_rows(eta)


def losses(theta, X, y, family):
    """Per-example loss l(z_i; theta), shape (n,).

    squared:     (eta - y)^2
    logistic:    log(1 + e^eta) - y eta   (as logaddexp(0, eta) - y eta)
    poisson:     e^eta - y eta
    multinomial: logsumexp(eta) - eta_y
    """
    eta = linear_predictor(theta, X, family)
    n = eta.shape[0]
    if family == "squared":
        y = _as_y(y, n, family)
        return (eta - y) ** 2
    if family == "logistic":
        y = _as_y(y, n, family)
        return np.logaddexp(0.0, eta) - y * eta
    if family == "poisson":
        y = _as_y(y, n, family)
        return np.exp(eta) - y * eta
    y = _as_y(y, n, family, eta.shape[1])
    return _logsumexp_rows(eta) - eta[np.arange(n), y]


def _residual(theta, X, y, family):
    """dl/deta: (n,) for scalar families, (n, k) = p_i - e_{y_i} for multinomial."""
    mu = mean_response(theta, X, family)
    n = mu.shape[0]
    if family == "multinomial":
        k = mu.shape[1]
        return mu - _one_hot(_as_y(y, n, family, k), k)
    y = _as_y(y, n, family)
    if family == "squared":
        return 2.0 * (mu - y)
    return mu - y  # logistic: sigma - y; poisson: e^eta - y


def _hessian_weights(theta, X, family):
    """d^2 l / d eta^2: (n,) for scalar families, (n, k, k) = diag(p_i) - p_i p_i^T for multinomial."""
    mu = mean_response(theta, X, family)
    if family == "squared":
        return np.full(mu.shape[0], 2.0)
    if family == "logistic":
        return mu * (1.0 - mu)
    if family == "poisson":
        return mu
    P = mu
    k = P.shape[1]
    return P[:, :, None] * np.eye(k)[None, :, :] - P[:, :, None] * P[:, None, :]


def per_example_grads(theta, X, y, family):
    """Gradients of l(z_i; theta) w.r.t. the flattened theta, shape (n, p).

    Scalar families: row i is r_i z_i with r_i = dl/deta_i (a residual times the row).
    Multinomial: row i is the row-major flattening of the outer product (p_i - e_{y_i}) z_i^T.
    """
    Z = design(X)
    r = _residual(theta, X, y, family)
    if family == "multinomial":
        n, k = r.shape
        return (r[:, :, None] * Z[:, None, :]).reshape(n, k * Z.shape[1])
    return r[:, None] * Z


# ---------------------------------------------------------------------------------------
# the objective L_w and its derivatives
# ---------------------------------------------------------------------------------------


def objective(theta, X, y, family, w=None, l2=0.0):
    """L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||coef||^2 (intercepts unpenalised)."""
    X = _as_X(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, W = _as_w(w, X.shape[0])
    coef = _mask(theta) * theta
    return float(w @ losses(theta, X, y, family) / W + l2 * np.sum(coef**2))


def gradient(theta, X, y, family, w=None, l2=0.0):
    """grad L_w = (1/W) sum_i w_i grad l(z_i) + 2 l2 mask * theta, flattened, shape (p,)."""
    X = _as_X(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, W = _as_w(w, X.shape[0])
    G = per_example_grads(theta, X, y, family)
    return (w @ G) / W + 2.0 * l2 * (_mask(theta) * theta).reshape(-1)


def hessian(theta, X, y, family, w=None, l2=0.0):
    """Explicit Hessian of L_w (penalty included), shape (p, p) in flattened order.

    Scalar families:  H = (1/W) Z^T diag(w h) Z + 2 l2 diag(mask).
    Multinomial:      block (a, b) of H (each (d+1) x (d+1)) is
                      (1/W) Z^T diag(w_i (delta_ab p_ia - p_ia p_ib)) Z, plus 2 l2 diag(mask).
    ``y`` does not enter (the Hessian of these losses is independent of y); it is accepted
    for a uniform signature.
    """
    X = _as_X(X)
    Z = design(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, W = _as_w(w, X.shape[0])
    h = _hessian_weights(theta, X, family)
    penalty = 2.0 * l2 * np.diag(_mask(theta).reshape(-1))
    if family != "multinomial":
        return (Z.T * (w * h)) @ Z / W + penalty
    k, q = theta.shape
    H = np.zeros((k * q, k * q))
    for a in range(k):  # loop over class pairs (k^2 blocks), never over examples
        for b in range(k):
            H[a * q:(a + 1) * q, b * q:(b + 1) * q] = (Z.T * (w * h[:, a, b])) @ Z / W
    return H + penalty


def hvp(theta, X, y, family, v, w=None, l2=0.0):
    """Hessian-vector product H v, matrix-free (H is never formed).

    v has shape (p,) or (p, r); the result has the same shape.  Two passes over the data:
    u = Z v (directional change of eta), then (1/W) Z^T (w * h * u) -- for multinomial
    h * u means (diag(p_i) - p_i p_i^T) u_i per example -- plus 2 l2 mask * v.
    """
    X = _as_X(X)
    Z = design(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, W = _as_w(w, X.shape[0])
    v = np.asarray(v, dtype=np.float64)
    one = v.ndim == 1
    V = v[:, None] if one else v
    p = theta.size
    if V.shape[0] != p:
        raise ValueError(f"v must have leading dimension p={p}, got shape {v.shape}")
    mask = _mask(theta).reshape(-1)[:, None]
    if family != "multinomial":
        h = _hessian_weights(theta, X, family)
        U = Z @ V  # (n, r)
        out = Z.T @ ((w * h)[:, None] * U) / W
    else:
        k, q = theta.shape
        P = mean_response(theta, X, family)  # (n, k)
        Vk = V.reshape(k, q, -1)  # (k, d+1, r)
        U = np.einsum("ij,ajr->iar", Z, Vk)  # (n, k, r): u_i = Theta_v z_i
        # (diag(p) - p p^T) u = p * u - p * (p . u)
        PU = P[:, :, None] * U
        M = PU - P[:, :, None] * PU.sum(axis=1, keepdims=True)
        out = np.einsum("ij,iar->ajr", Z, (w / W)[:, None, None] * M).reshape(p, -1)
    out = out + 2.0 * l2 * mask * V
    return out[:, 0] if one else out


# ---------------------------------------------------------------------------------------
# fitting: damped Newton with backtracking line search
# ---------------------------------------------------------------------------------------


def fit(X, y, family, w=None, l2=0.0, n_classes=None, tol=1e-10, max_iter=100):
    """theta* = argmin L_w by damped Newton, starting at zeros; returns theta in natural shape.

    Each iteration: g = grad L_w, stop if max|g| <= tol; Newton step s = -H^{-1} g
    (-H^+ g for multinomial, see module doc); Newton decrement lam2 = -g . s; backtracking
    (halving t) until the Armijo condition L(theta + t s) <= L(theta) - 1e-4 t lam2 holds.
    When lam2 is already at rounding level the full step is taken (comparing objective
    values could not tell a decrease from noise there).  Squared loss converges in one step.
    For multinomial, k = n_classes, defaulting to max(y) + 1.
    """
    _check_family(family)
    X = _as_X(X)
    n, d = X.shape
    if family == "multinomial":
        if n_classes is None:
            n_classes = int(np.max(np.asarray(y))) + 1
        theta = np.zeros((int(n_classes), d + 1))
        _as_y(y, n, family, theta.shape[0])
    else:
        theta = np.zeros(d + 1)

    def L(t):
        return objective(t, X, y, family, w, l2)

    with np.errstate(over="ignore", invalid="ignore"):
        f = L(theta)
        for _ in range(max_iter):
            g = gradient(theta, X, y, family, w, l2)
            if np.max(np.abs(g)) <= tol:
                break
            H = hessian(theta, X, y, family, w, l2)
            step = -_solve(H, g, family).reshape(theta.shape)
            lam2 = float(-g @ step.reshape(-1))
            t = 1.0
            if lam2 > 1e-10 * max(1.0, abs(f)):
                while t > 1e-12:
                    f_new = L(theta + t * step)
                    if np.isfinite(f_new) and f_new <= f - 1e-4 * t * lam2:
                        break
                    t *= 0.5
            theta = theta + t * step
            f = L(theta)
    return theta


# ---------------------------------------------------------------------------------------
# influence
# ---------------------------------------------------------------------------------------


def _influence_setup(theta, X, y, family, w, l2):
    """Common pieces: natural theta, H, W, and the penalty term c = 2 l2 mask * theta (flat)."""
    X = _as_X(X)
    theta = _as_theta(theta, X.shape[1], family)
    _, W = _as_w(w, X.shape[0])
    H = hessian(theta, X, y, family, w, l2)
    c = 2.0 * l2 * (_mask(theta) * theta).reshape(-1)
    return X, theta, H, W, c


def influence_params(theta, X, y, family, w=None, l2=0.0, idx=None):
    """Parameter influences, shape (n, p) (or (len(idx), p)); row m is

        I(z_m) = -H^{-1} (grad l(z_m; theta) + 2 l2 mask * theta) / W

    (H^+ for multinomial).  ``idx`` selects training rows m (default: all).
    """
    X, theta, H, W, c = _influence_setup(theta, X, y, family, w, l2)
    G = per_example_grads(theta, X, y, family)
    if idx is not None:
        G = G[np.asarray(idx)]
    return -_solve(H, (G + c).T, family).T / W


def loo_one_step(theta, X, y, family, w=None, l2=0.0, groups=None):
    """theta_(-G) - theta* by one Newton step from theta on the objective with the rows of each
    group removed (their weights set to 0, the weighted mean renormalised), from the explicit
    gradient and Hessian of that objective: -H_(-G)^{-1} grad L_(-G)(theta) (H^+ for multinomial).
    ``groups``: a list of index lists (default: each training row alone). Shape (n_groups, p).
    """
    X = _as_X(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, _ = _as_w(w, X.shape[0])
    groups = [[m] for m in range(X.shape[0])] if groups is None else groups
    out = []
    for g in groups:
        w2 = w.copy()
        w2[np.asarray(g, dtype=int)] = 0.0
        grad = gradient(theta, X, y, family, w2, l2)
        H = hessian(theta, X, y, family, w2, l2)
        out.append(-_solve(H, grad, family))
    return np.array(out)


def influence_new_point(theta, X, y, family, x_new, y_new, w=None, l2=0.0):
    """I(z) of a point z = (x_new, y_new) not in the training set (equivalently: present with
    weight 0), shape (p,).  (X, y, w) define H and W; same formula as influence_params.
    """
    X, theta, H, W, c = _influence_setup(theta, X, y, family, w, l2)
    x_new = np.asarray(x_new, dtype=np.float64).reshape(1, X.shape[1])
    g = per_example_grads(theta, x_new, np.asarray(y_new).reshape(1), family)[0]
    return -_solve(H, g + c, family) / W


def influence_on(theta, X, y, family, grad_f, w=None, l2=0.0):
    """Influence of every training point on differentiable functions f of theta.

    grad_f: (p,) (one function) or (r, p) (r functions), gradients at theta w.r.t. the
    flattened theta.  Returns grad_f . I(z_m) for all m: (n,) or (r, n).  Computed as
    -((G + c) H^{-1} grad_f^T)^T / W with one solve per function (H is symmetric).
    """
    X, theta, H, W, c = _influence_setup(theta, X, y, family, w, l2)
    grad_f = np.asarray(grad_f, dtype=np.float64)
    one = grad_f.ndim == 1
    F = grad_f[None, :] if one else grad_f
    V = _solve(H, F.T, family)  # (p, r) = H^{-1} grad_f^T
    G = per_example_grads(theta, X, y, family)  # (n, p)
    S = -((G + c) @ V).T / W  # (r, n)
    return S[0] if one else S


def influence_on_loss(theta, X, y, family, X_test, y_test, w=None, l2=0.0):
    """Score matrix S (q, n): S[t, m] = grad l(z_t; theta) . I(z_m).

    S[t, m] < 0 means upweighting training point m lowers the loss at test point t.
    """
    Gt = per_example_grads(theta, X_test, y_test, family)  # (q, p)
    return influence_on(theta, X, y, family, Gt, w, l2)


def self_influence(theta, X, y, family, w=None, l2=0.0):
    """grad l(z_m; theta) . I(z_m) for every training point m, shape (n,)."""
    X, theta, H, W, c = _influence_setup(theta, X, y, family, w, l2)
    G = per_example_grads(theta, X, y, family)
    Iparams = -_solve(H, (G + c).T, family).T / W
    return np.sum(G * Iparams, axis=1)


# =======================================================================================
# Multilayer perceptron (DESIGN-networks.md sections 1-3)
# =======================================================================================
#
# sizes = [d, h_1, ..., h_{L-1}, k]; layer l = 1..L has W_l (h_l, h_{l-1}) and b_l (h_l,):
#
#     a_0 = x,   z_l = W_l a_{l-1} + b_l,   a_l = phi(z_l) (l < L),   h = z_L (no output activation)
#
# phi: "tanh"; "relu" with relu'(0) = relu'' = 0; "gelu" = z Phi(z) (Phi the standard normal cdf).
# Heads: "softmax" l = logsumexp(h) - h_y (y a class id), "squared" l = ||h - y||^2 (no 1/2).
# Lambda = d^2 l / dh^2 = diag(p) - p p^T (p = softmax(h)) or 2 I.
#
# theta (p,): per layer Theta_l = [W_l | b_l] (h_l, h_{l-1} + 1), bias LAST column, flattened
# row-major, layers concatenated from input to output.  With sizes [d, k] this is the
# multinomial GLM's (k, d+1) theta (softmax head) or the squared GLM's (d+1,) (k = 1), and
# every quantity below equals the GLM one above.  M (mlp_penalty_mask) is 1 on weights, 0 on biases.
#
#     L_w   = (1/W) sum_i w_i l_i + l2 sum_l ||W_l||^2
#     G     = (1/W) sum_i w_i J_i^T Lambda_i J_i + 2 l2 diag(M),        J_i = dh_i/dtheta (k, p)
#     H     = G + (1/W) sum_i w_i sum_c (dl_i/dh_c) hess(h_ic)          (exact Hessian of L_w)
#     I(z_m) = -K^{-1} (grad l_m + 2 l2 M theta) / W,                   K = G or H, plus damping I
#
# theta is whatever is given: nothing here assumes a minimiser.  Arrays are float64; the
# per-example quantities are vectorised over examples (loops run over layers, units, outputs).

ACTIVATIONS = ("tanh", "relu", "gelu")
HEADS = ("softmax", "squared")

__all__ += [
    "ACTIVATIONS",
    "HEADS",
    "mlp_n_params",
    "mlp_unflatten",
    "mlp_flatten",
    "mlp_penalty_mask",
    "mlp_flat_directions",
    "mlp_forward",
    "mlp_predict",
    "mlp_losses",
    "mlp_per_example_grads",
    "mlp_objective",
    "mlp_gradient",
    "mlp_jacobians",
    "mlp_gauss_newton",
    "mlp_hessian",
    "mlp_gnvp",
    "mlp_hvp",
    "mlp_influence_params",
    "mlp_influence_on_loss",
]

_erfc = np.frompyfunc(math.erfc, 1, 1)


def _normal_cdf(z):
    """Phi(z) = erfc(-z / sqrt 2) / 2, math.erfc elementwise: relative error ~1e-16 (1 + z^2), also in the lower tail."""
    z = np.asarray(z, dtype=np.float64)
    return 0.5 * np.asarray(_erfc(-z / math.sqrt(2.0)), dtype=np.float64)


def _normal_pdf(z):
    return np.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)


def _phi(z, activation, order=0):
    """phi(z), phi'(z) or phi''(z) (order 0, 1, 2), elementwise."""
    if activation == "tanh":
        t = np.tanh(z)
        return (t, 1.0 - t**2, -2.0 * t * (1.0 - t**2))[order]
    if activation == "relu":
        return (np.maximum(z, 0.0), (z > 0).astype(np.float64), np.zeros_like(z))[order]
    if activation == "gelu":
        cdf, pdf = _normal_cdf(z), _normal_pdf(z)
        return (z * cdf, cdf + z * pdf, pdf * (2.0 - z**2))[order]
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def _check_sizes(sizes):
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must be [d, h_1, ..., k] with at least two positive entries, got {sizes}")
    return sizes


def _check_head(head):
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


def _layer_slices(sizes):
    """For each layer l: (offset of Theta_l in theta, fan_out h_l, fan_in h_{l-1})."""
    out, start = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        out.append((start, fan_out, fan_in))
        start += fan_out * (fan_in + 1)
    return out


def mlp_n_params(sizes):
    """p = sum_l h_l (h_{l-1} + 1)."""
    sizes = _check_sizes(sizes)
    return sum(fan_out * (fan_in + 1) for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True))


def mlp_unflatten(theta, sizes):
    """Flat theta (p,) -> [(W_1, b_1), ..., (W_L, b_L)] (copies), W_l (h_l, h_{l-1}), b_l (h_l,)."""
    sizes = _check_sizes(sizes)
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    p = mlp_n_params(sizes)
    if theta.size != p:
        raise ValueError(f"theta has {theta.size} entries, sizes {sizes} need p = {p}")
    layers = []
    for start, fan_out, fan_in in _layer_slices(sizes):
        T = theta[start:start + fan_out * (fan_in + 1)].reshape(fan_out, fan_in + 1)
        layers.append((T[:, :-1].copy(), T[:, -1].copy()))
    return layers


def mlp_flatten(layers):
    """[(W_l, b_l)] -> flat theta: each Theta_l = [W_l | b_l] row-major, input layer first."""
    blocks = []
    for W, b in layers:
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"layer shapes W {W.shape}, b {b.shape} do not match")
        blocks.append(np.hstack([W, b[:, None]]).reshape(-1))
    return np.concatenate(blocks)


def mlp_penalty_mask(sizes):
    """M (p,): 1 on weight entries, 0 on bias entries."""
    sizes = _check_sizes(sizes)
    return mlp_flatten([(np.ones((fan_out, fan_in)), np.zeros(fan_out)) for _, fan_out, fan_in in _layer_slices(sizes)])


def mlp_flat_directions(sizes, head, l2=0.0):
    """Orthonormal columns (p, f) spanning the directions along which every l_i and L_w are constant.

    softmax head: softmax(h + c 1) = softmax(h), so shifting every output bias b_L by the same
    amount is flat; with l2 == 0 so is W_L -> W_L + 1 v^T for each unit vector v (the output moves
    by (v . a_{L-1}) 1).  squared head: none (f = 0).  With no hidden layer these span the null
    space of the multinomial GLM's Hessian.
    """
    sizes = _check_sizes(sizes)
    _check_head(head)
    p = mlp_n_params(sizes)
    if head != "softmax":
        return np.zeros((p, 0))
    start, k, fan_in = _layer_slices(sizes)[-1]
    columns = [fan_in] if l2 != 0.0 else list(range(fan_in + 1))  # bias column, (l2 == 0) every column
    N = np.zeros((p, len(columns)))
    for j, col in enumerate(columns):
        E = np.zeros((k, fan_in + 1))
        E[:, col] = 1.0 / math.sqrt(k)
        N[start:start + E.size, j] = E.reshape(-1)
    return N


# ---------------------------------------------------------------------------------------
# MLP: forward pass, heads, losses
# ---------------------------------------------------------------------------------------


def _mlp_setup(theta, X, sizes, activation):
    sizes = _check_sizes(sizes)
    _phi(np.zeros(1), activation)  # checks the name
    X = _as_X(X)
    if X.shape[1] != sizes[0]:
        raise ValueError(f"X has {X.shape[1]} columns, sizes[0] = {sizes[0]}")
    return sizes, X, mlp_unflatten(theta, sizes)


def _forward_pass(layers, X, activation):
    """zs = [z_1, ..., z_L] (each (n, h_l)), acts = [a_0, ..., a_{L-1}] (each (n, h_{l-1}))."""
    zs, acts = [], [X]
    for l, (W, b) in enumerate(layers):
        z = acts[-1] @ W.T + b
        zs.append(z)
        if l < len(layers) - 1:
            acts.append(_phi(z, activation))
    return zs, acts


def mlp_forward(theta, X, sizes, activation, return_all=False):
    """Output h = z_L, shape (n, k); with ``return_all`` also zs = [z_1..z_L] and acts = [a_0..a_{L-1}]."""
    _, X, layers = _mlp_setup(theta, X, sizes, activation)
    zs, acts = _forward_pass(layers, X, activation)
    return (zs[-1], zs, acts) if return_all else zs[-1]


def mlp_predict(theta, X, sizes, activation, head, kind="linear"):
    """kind "linear": h (n, k); "mean": softmax(h) for the softmax head, h for the squared head."""
    _check_head(head)
    h = mlp_forward(theta, X, sizes, activation)
    if kind == "linear":
        return h
    if kind == "mean":
        return _softmax_rows(h) if head == "softmax" else h
    raise ValueError(f"unknown kind {kind!r}; expected 'linear' or 'mean'")


def _mlp_targets(y, n, k, head):
    """Class ids (n,) int for softmax; real targets (n, k) for squared ((n,) accepted when k = 1)."""
    if head == "softmax":
        return _as_y(y, n, "multinomial", k)
    y = np.asarray(y, dtype=np.float64)
    if k == 1 and y.shape == (n,):
        y = y[:, None]
    if y.shape != (n, k):
        raise ValueError(f"squared-head y must have shape ({n}, {k})" + (f" or ({n},)" if k == 1 else "") + f", got {y.shape}")
    return y


def _head_loss(h, y, head):
    if head == "softmax":
        return _logsumexp_rows(h) - h[np.arange(h.shape[0]), y]
    return np.sum((h - y) ** 2, axis=1)


def _head_residual(h, y, head):
    """dl/dh (n, k): p - e_y (softmax) or 2 (h - y) (squared)."""
    if head == "softmax":
        return _softmax_rows(h) - _one_hot(y, h.shape[1])
    return 2.0 * (h - y)


def _head_lambda(h, head):
    """Lambda = d^2 l / dh^2 (n, k, k): diag(p) - p p^T (softmax) or 2 I (squared)."""
    n, k = h.shape
    if head == "softmax":
        P = _softmax_rows(h)
        return P[:, :, None] * np.eye(k)[None] - P[:, :, None] * P[:, None, :]
    return np.broadcast_to(2.0 * np.eye(k), (n, k, k)).copy()


def mlp_losses(theta, X, y, sizes, activation, head):
    """l(z_i; theta), shape (n,): logsumexp(h_i) - h_{i, y_i} or ||h_i - y_i||^2."""
    _check_head(head)
    h = mlp_forward(theta, X, sizes, activation)
    return _head_loss(h, _mlp_targets(y, h.shape[0], h.shape[1], head), head)


# ---------------------------------------------------------------------------------------
# MLP: backpropagation, gradients, Jacobians
# ---------------------------------------------------------------------------------------


def _backward(layers, zs, s_out, activation):
    """s_l = d f/d z_l for l = 1..L given s_L = s_out (n, k):  s_{l-1} = (W_l^T s_l) o phi'(z_{l-1})."""
    ss = [s_out]
    for l in range(len(layers) - 1, 0, -1):
        ss.insert(0, (ss[0] @ layers[l][0]) * _phi(zs[l - 1], activation, 1))
    return ss


def _grad_from_backward(ss, acts):
    """Per-example gradients (n, p): the block of Theta_l is the row-major outer(s_l, abar_{l-1}), abar = [a, 1]."""
    n = acts[0].shape[0]
    blocks = []
    for s, a in zip(ss, acts, strict=True):
        abar = np.hstack([a, np.ones((n, 1))])
        blocks.append((s[:, :, None] * abar[:, None, :]).reshape(n, -1))
    return np.hstack(blocks)


def mlp_per_example_grads(theta, X, y, sizes, activation, head):
    """grad_theta l(z_i; theta), shape (n, p), by backpropagation from s_L = dl/dh."""
    _check_head(head)
    _, X, layers = _mlp_setup(theta, X, sizes, activation)
    zs, acts = _forward_pass(layers, X, activation)
    h = zs[-1]
    r = _head_residual(h, _mlp_targets(y, h.shape[0], h.shape[1], head), head)
    return _grad_from_backward(_backward(layers, zs, r, activation), acts)


def mlp_objective(theta, X, y, sizes, activation, head, w=None, l2=0.0):
    """L_w(theta) = (1/W) sum_i w_i l_i + l2 sum_l ||W_l||^2 (biases unpenalised)."""
    l = mlp_losses(theta, X, y, sizes, activation, head)
    w, W = _as_w(w, l.shape[0])
    coef = mlp_penalty_mask(sizes) * np.asarray(theta, dtype=np.float64).reshape(-1)
    return float(w @ l / W + l2 * np.sum(coef**2))


def mlp_gradient(theta, X, y, sizes, activation, head, w=None, l2=0.0):
    """grad L_w = (1/W) sum_i w_i grad l_i + 2 l2 M theta, shape (p,)."""
    Gi = mlp_per_example_grads(theta, X, y, sizes, activation, head)
    w, W = _as_w(w, Gi.shape[0])
    return w @ Gi / W + 2.0 * l2 * mlp_penalty_mask(sizes) * np.asarray(theta, dtype=np.float64).reshape(-1)


def mlp_jacobians(theta, X, sizes, activation):
    """J_i = dh_i/dtheta, shape (n, k, p): row c is backpropagation from s_L = e_c."""
    sizes, X, layers = _mlp_setup(theta, X, sizes, activation)
    zs, acts = _forward_pass(layers, X, activation)
    n, k = zs[-1].shape
    J = np.empty((n, k, mlp_n_params(sizes)))
    for c in range(k):
        e_c = np.zeros((n, k))
        e_c[:, c] = 1.0
        J[:, c, :] = _grad_from_backward(_backward(layers, zs, e_c, activation), acts)
    return J


# ---------------------------------------------------------------------------------------
# MLP: curvature
# ---------------------------------------------------------------------------------------


def mlp_gauss_newton(theta, X, y, sizes, activation, head, w=None, l2=0.0):
    """G = (1/W) sum_i w_i J_i^T Lambda_i J_i + 2 l2 diag(M), shape (p, p) (symmetric PSD).

    ``y`` does not enter (Lambda does not depend on it); it is accepted for a uniform signature.
    """
    _check_head(head)
    J = mlp_jacobians(theta, X, sizes, activation)
    w, W = _as_w(w, J.shape[0])
    Lam = _head_lambda(mlp_forward(theta, X, sizes, activation), head)
    G = np.einsum("i,icp,icd,idq->pq", w / W, J, Lam, J)
    return G + 2.0 * l2 * np.diag(mlp_penalty_mask(sizes))


def _forward_jacobians(layers, zs, acts, activation, p):
    """Dz_l = dz_l/dtheta (n, h_l, p) for l = 1..L, by forward-mode differentiation:

        Dz_l = W_l Da_{l-1} + (dz_l/dTheta_l: row j has abar_{l-1} at the entries of row j of Theta_l),
        Da_l = phi'(z_l) o Dz_l,   Da_0 = 0.
    """
    n = acts[0].shape[0]
    Da = np.zeros((n, acts[0].shape[1], p))
    Dzs, start = [], 0
    for l, (W, _) in enumerate(layers):
        fan_out, fan_in = W.shape
        Dz = np.einsum("jk,ikp->ijp", W, Da)
        abar = np.hstack([acts[l], np.ones((n, 1))])
        for j in range(fan_out):
            row = start + j * (fan_in + 1)
            Dz[:, j, row:row + fan_in + 1] += abar
        Dzs.append(Dz)
        start += fan_out * (fan_in + 1)
        if l < len(layers) - 1:
            Da = _phi(zs[l], activation, 1)[:, :, None] * Dz
    return Dzs


def mlp_hessian(theta, X, y, sizes, activation, head, w=None, l2=0.0):
    """Exact Hessian of L_w, shape (p, p), computed analytically (no finite differences).

    H = G + (1/W) sum_i w_i T_i, where T_i = hess_theta of l_i with dl_i/dh held fixed
    = sum_c (dl_i/dh_c) hess(h_ic).  T_i sums, over the nodes of the network, the node's
    adjoint times its own second derivative, contracted with the forward-mode Jacobians of
    its inputs (second-order chain rule):

      a_l = phi(z_l), l < L:          sum_j g_lj phi''(z_lj) Dz_lj Dz_lj^T,   g_l = dl/da_l = W_{l+1}^T s_{l+1}
      z_l = W_l a_{l-1} + b_l, l >= 2: sum_{j,k} s_lj (e_{W_l[j,k]} Da_{l-1,k}^T + Da_{l-1,k} e_{W_l[j,k]}^T)

    with s_l = dl/dz_l from backpropagation, Dz_l = dz_l/dtheta and Da_l = da_l/dtheta from
    forward mode, e_{W_l[j,k]} the unit vector of that parameter.  (z_1 = W_1 x + b_1 is linear in
    theta, so it adds nothing; with no hidden layer T_i = 0 and H = G.)  Exact up to rounding:
    central differences of mlp_gradient (step 1e-5) agree to ~1e-9 relative, their own error.
    ``y`` enters through dl/dh.
    """
    _check_head(head)
    sizes, X, layers = _mlp_setup(theta, X, sizes, activation)
    zs, acts = _forward_pass(layers, X, activation)
    w, W = _as_w(w, X.shape[0])
    h = zs[-1]
    r = _head_residual(h, _mlp_targets(y, h.shape[0], h.shape[1], head), head)
    ss = _backward(layers, zs, r, activation)
    p = mlp_n_params(sizes)
    Dzs = _forward_jacobians(layers, zs, acts, activation, p)
    c = w / W

    curv = np.zeros((p, p))  # activation curvature
    for l in range(len(layers) - 1):  # hidden layer l+1 (0-based l): a = phi(zs[l]), its adjoint ss[l+1] @ W_{l+2}
        g = ss[l + 1] @ layers[l + 1][0]
        curv += np.einsum("ij,ijp,ijq->pq", c[:, None] * g * _phi(zs[l], activation, 2), Dzs[l], Dzs[l])

    cross = np.zeros((p, p))  # rows of W_l entries: s_lj Da_{l-1,k}^T (symmetrised below)
    for l, (start, fan_out, fan_in) in enumerate(_layer_slices(sizes)):
        if l == 0:
            continue  # a_0 = x does not depend on theta
        Da = _phi(zs[l - 1], activation, 1)[:, :, None] * Dzs[l - 1]  # (n, fan_in, p)
        block = np.zeros((fan_out, fan_in + 1, p))
        block[:, :fan_in, :] = np.einsum("i,ij,ikq->jkq", c, ss[l], Da)  # bias column: d^2 z / db da = 0
        cross[start:start + fan_out * (fan_in + 1)] = block.reshape(-1, p)

    G = mlp_gauss_newton(theta, X, y, sizes, activation, head, w, l2)
    return G + curv + cross + cross.T


def _as_v(v, p):
    v = np.asarray(v, dtype=np.float64)
    if v.shape[0] != p or v.ndim not in (1, 2):
        raise ValueError(f"v must have shape ({p},) or ({p}, r), got {v.shape}")
    return v


def mlp_gnvp(theta, X, y, sizes, activation, head, v, w=None, l2=0.0):
    """G v for v (p,) or (p, r) (G formed explicitly)."""
    G = mlp_gauss_newton(theta, X, y, sizes, activation, head, w, l2)
    return G @ _as_v(v, G.shape[0])


def mlp_hvp(theta, X, y, sizes, activation, head, v, w=None, l2=0.0):
    """H v for v (p,) or (p, r) (H formed explicitly)."""
    H = mlp_hessian(theta, X, y, sizes, activation, head, w, l2)
    return H @ _as_v(v, H.shape[0])


# ---------------------------------------------------------------------------------------
# MLP: influence
# ---------------------------------------------------------------------------------------


def _solve_off_flat(K, B, N, rcond=PINV_RCOND):
    """K^{-1} B on the orthogonal complement of the flat directions N (orthonormal columns).

    With U an orthonormal basis of that complement (from a complete QR of N), returns
    U (U^T K U)^+ U^T B, where ^+ is the symmetric pseudo-inverse keeping eigenvalues with
    |lam| > rcond max|lam| (K may be indefinite when it is the Hessian).  When U^T K U is
    nonsingular this is its exact inverse, and the result is orthogonal to N.
    """
    f = N.shape[1]
    Q, _ = np.linalg.qr(N, mode="complete")
    U = Q[:, f:]
    lam, V = np.linalg.eigh(U.T @ K @ U)
    inv = np.zeros_like(lam)
    keep = np.abs(lam) > rcond * np.max(np.abs(lam))
    inv[keep] = 1.0 / lam[keep]
    return U @ (V @ (inv[:, None] * (V.T @ (U.T @ B))))


def mlp_influence_params(theta, X, y, sizes, activation, head, w=None, l2=0.0, damping=0.0, curvature="gauss-newton", idx=None):
    """Rows I(z_m) = -K^{-1} (grad l_m + 2 l2 M theta) / W, shape (n, p) (or (len(idx), p)).

    K = G ("gauss-newton") or H ("hessian"), plus damping * I.  Softmax head with damping == 0:
    K is singular along mlp_flat_directions (output-bias shift; with l2 == 0 also W_L + 1 v^T),
    and the right-hand sides are orthogonal to them, so K is inverted on their orthogonal
    complement (_solve_off_flat); the rows are orthogonal to the flat directions.  With no
    hidden layer this is the multinomial GLM's minimum-norm influence.  Otherwise np.linalg.solve.
    """
    _check_head(head)
    if curvature == "gauss-newton":
        K = mlp_gauss_newton(theta, X, y, sizes, activation, head, w, l2)
    elif curvature == "hessian":
        K = mlp_hessian(theta, X, y, sizes, activation, head, w, l2)
    else:
        raise ValueError(f"unknown curvature {curvature!r}; expected 'gauss-newton' or 'hessian'")
    K = K + damping * np.eye(K.shape[0])
    Gi = mlp_per_example_grads(theta, X, y, sizes, activation, head)
    _, W = _as_w(w, Gi.shape[0])
    if idx is not None:
        Gi = Gi[np.asarray(idx)]
    B = (Gi + 2.0 * l2 * mlp_penalty_mask(sizes) * np.asarray(theta, dtype=np.float64).reshape(-1)).T
    N = mlp_flat_directions(sizes, head, l2)
    if damping == 0.0 and N.shape[1] > 0:
        return -_solve_off_flat(K, B, N).T / W
    return -np.linalg.solve(K, B).T / W


def mlp_influence_on_loss(theta, X, y, sizes, activation, head, X_test, y_test, w=None, l2=0.0, damping=0.0, curvature="gauss-newton"):
    """S (q, n): S[t, m] = grad l(z_t; theta) . I(z_m); S[t, m] < 0: upweighting m lowers the loss at t."""
    Gt = mlp_per_example_grads(theta, X_test, y_test, sizes, activation, head)
    I = mlp_influence_params(theta, X, y, sizes, activation, head, w, l2, damping, curvature)
    return Gt @ I.T
