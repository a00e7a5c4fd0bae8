"""Plain NumPy reference implementation of DESIGN.md sections 1-2.

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
