"""Plain NumPy reference implementation of every formula of upweight: the GLMs and the MLPs.

It implements DESIGN.md sections 1-2 and (last section, ``mlp_*``) the multilayer perceptron
of DESIGN-networks.md sections 1-3.

This module is the ground truth the test-suite compares the Rust core against, and it is
meant to be read as the mathematics.  It depends on NumPy only, favours clarity over speed,
but every per-example quantity is a matrix product (no Python loop over examples).  Use it
to check a number the core gives you on a small problem (Examples below).

Constants:

* ``FAMILIES = ("squared", "logistic", "poisson", "multinomial")``: the GLM losses, the
  ``family`` argument of the GLM functions (table in the Notes).
* ``ACTIVATIONS = ("tanh", "relu", "gelu")``: the hidden-layer nonlinearities phi of the
  ``mlp_*`` functions (their ``activation`` argument): tanh; relu with relu'(0) = relu'' = 0;
  gelu(z) = z Phi(z), Phi the standard normal cdf.  There is no activation after the last layer.
* ``HEADS = ("softmax", "squared")``: the output losses of the ``mlp_*`` functions (their
  ``head`` argument): softmax cross-entropy l = logsumexp(h) - h_y (y a class id), or squared
  error l = ||h - y||^2 (no 1/2).
* ``PINV_RCOND = 1e-10``: the relative eigenvalue cutoff of the pseudo-inverse used for the
  multinomial family (and the softmax head without damping), see the Notes.

Notes
-----
Notation.  Training set: rows x_i of ``X`` (n, d), targets y_i, weights w_i >= 0 (``w=None``
means all ones), W = sum_i w_i.  The design matrix puts the intercept column LAST::

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
``_pinv_solve``).  H^+ returns the minimum-norm solution, which lies in range(H), the
orthogonal complement of the null directions.  Starting ``fit`` at zero, every Newton step
stays in that complement, so the fitted parameters have class-wise sums equal to zero
(intercepts sum to zero; with l2 == 0 the whole rows sum to zero), and the influences
I(z_m) = -H^+ (...) / W lie in the same subspace -- they are exactly the derivative of refits
computed the same way.  Influence on anything invariant to the null directions (predicted
probabilities, losses) does not depend on this choice.  The scalar families use
``np.linalg.solve`` and raise ``np.linalg.LinAlgError`` if H is singular.

Multilayer perceptron (DESIGN-networks.md sections 1-3, the ``mlp_*`` functions).
sizes = [d, h_1, ..., h_{L-1}, k]; layer l = 1..L has W_l (h_l, h_{l-1}) and b_l (h_l,)::

    a_0 = x,   z_l = W_l a_{l-1} + b_l,   a_l = phi(z_l) (l < L),   h = z_L (no output activation)

Lambda = d^2 l / dh^2 = diag(p) - p p^T (softmax head, p = softmax(h)) or 2 I (squared head).
theta (p,): per layer Theta_l = [W_l | b_l] (h_l, h_{l-1} + 1), bias LAST column, flattened
row-major, layers concatenated from input to output.  With sizes [d, k] this is the
multinomial GLM's (k, d+1) theta (softmax head) or the squared GLM's (d+1,) (k = 1), and
every quantity equals the GLM one.  M (:func:`mlp_penalty_mask`) is 1 on weights, 0 on biases::

    L_w    = (1/W) sum_i w_i l_i + l2 sum_l ||W_l||^2
    G      = (1/W) sum_i w_i J_i^T Lambda_i J_i + 2 l2 diag(M),        J_i = dh_i/dtheta (k, p)
    H      = G + (1/W) sum_i w_i sum_c (dl_i/dh_c) hess(h_ic)          (exact Hessian of L_w)
    I(z_m) = -K^{-1} (grad l_m + 2 l2 M theta) / W,                    K = G or H, plus damping I

theta is whatever is given: nothing in the ``mlp_*`` functions assumes a minimiser.

Examples
--------
The Rust core and the reference agree on a small logistic regression:

>>> ref = uw.reference
>>> ref.FAMILIES, ref.ACTIVATIONS, ref.HEADS
(('squared', 'logistic', 'poisson', 'multinomial'), ('tanh', 'relu', 'gelu'), ('softmax', 'squared'))
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(8, 2))
>>> y = (X[:, 0] + rng.normal(size=8) > 0).astype(float)
>>> theta = ref.fit(X, y, "logistic", l2=0.1)
>>> model = uw.LogisticRegression(l2=0.1).fit(X, y)
>>> np.allclose(model.theta_, theta)
True
>>> np.allclose(uw.Influence(model, X, y).params(), ref.influence_params(theta, X, y, "logistic", l2=0.1))
True
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
    """Design matrix Z = [X, 1] of shape (n, d+1), intercept column last.

    Every GLM formula of this module is written with Z: eta = Z theta for the scalar families.

    Parameters
    ----------
    X : array_like of shape (n, d)
        Features; a 1-D array of shape (n,) is one feature column.

    Returns
    -------
    ndarray of shape (n, d+1)
        ``[X, 1]`` in float64.

    Raises
    ------
    ValueError
        If ``X`` is neither 1-D nor 2-D.

    Examples
    --------
    >>> uw.reference.design([[1.0, 2.0], [3.0, 4.0]])
    array([[1., 2., 1.],
           [3., 4., 1.]])
    >>> uw.reference.design(np.zeros(5)).shape
    (5, 2)
    """
    X = _as_X(X)
    return np.hstack([X, np.ones((X.shape[0], 1))])


def linear_predictor(theta, X, family):
    """Linear predictor eta = Z theta of every row.

    Shape (n,) for the scalar families (eta_i = z_i . theta), (n, k) for multinomial
    (eta_i = Theta z_i, one entry per class).

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).

    Returns
    -------
    ndarray of shape (n,), or (n, k) for "multinomial"
        eta_i for every row of ``X``.

    Raises
    ------
    ValueError
        If ``family`` is unknown or the size of ``theta`` is not d+1 (k (d+1) for multinomial).

    Examples
    --------
    >>> ref = uw.reference
    >>> X = np.array([[1.0, 2.0], [0.0, -1.0]])
    >>> ref.linear_predictor([0.5, 1.0, -1.0], X, "squared")  # coef (0.5, 1), intercept -1
    array([ 1.5, -2. ])
    >>> Theta = np.arange(9.0).reshape(3, 3)  # k = 3 classes, one row [coef_1, coef_2, intercept] each
    >>> ref.linear_predictor(Theta, X, "multinomial")
    array([[ 4., 16., 28.],
           [ 1.,  1.,  1.]])
    >>> np.array_equal(ref.linear_predictor(Theta.reshape(-1), X, "multinomial"), X @ Theta[:, :2].T + Theta[:, 2])
    True
    """
    Z = design(X)
    theta = _as_theta(theta, Z.shape[1] - 1, family)
    if family == "multinomial":
        return Z @ theta.T
    return Z @ theta


def mean_response(theta, X, family):
    """Mean response: the inverse link applied to the linear predictor eta.

    Identity (squared), sigmoid (logistic), exp (poisson), softmax (multinomial).

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).

    Returns
    -------
    ndarray of shape (n,), or (n, k) for "multinomial"
        The predicted mean, probability of class 1, rate, or class probabilities (rows sum to 1).

    Raises
    ------
    ValueError
        If ``family`` is unknown or the size of ``theta`` does not match ``X``.

    Examples
    --------
    >>> ref = uw.reference
    >>> X = np.array([[1.0, 2.0], [0.0, -1.0]])
    >>> ref.mean_response([0.0, 0.0, 0.0], X, "logistic")
    array([0.5, 0.5])
    >>> np.round(ref.mean_response([0.0, 1.0, 0.0], X, "poisson"), 4)  # exp(eta)
    array([7.3891, 0.3679])
    >>> P = ref.mean_response(np.arange(9.0).reshape(3, 3), X, "multinomial")
    >>> P.shape, np.allclose(P.sum(axis=1), 1.0)
    ((2, 3), True)
    """
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

    ::

        squared:     (eta - y)^2
        logistic:    log(1 + e^eta) - y eta   (as logaddexp(0, eta) - y eta)
        poisson:     e^eta - y eta
        multinomial: logsumexp(eta) - eta_y

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).

    Returns
    -------
    ndarray of shape (n,)
        l(z_i; theta) for every row, unweighted and without the penalty.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or multinomial ``y`` does not hold class ids 0..k-1.

    Examples
    --------
    >>> ref = uw.reference
    >>> X = np.array([[1.0, 2.0], [0.0, -1.0]])
    >>> ref.losses([1.0, 0.0, 0.0], X, [0.0, 2.0], "squared")  # (eta - y)^2 with eta = (1, 0)
    array([1., 4.])
    >>> np.round(ref.losses(np.zeros(3), X, [0.0, 1.0], "logistic"), 4)  # log 2 at theta = 0
    array([0.6931, 0.6931])
    >>> np.round(ref.losses(np.zeros((3, 3)), X, [0, 2], "multinomial"), 4)  # log 3 at theta = 0
    array([1.0986, 1.0986])
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

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).

    Returns
    -------
    ndarray of shape (n, p)
        grad l(z_i; theta), p = d+1, or k (d+1) for "multinomial"; unweighted, no penalty.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or multinomial ``y`` does not hold class ids 0..k-1.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(5, 2)), rng.normal(size=5)
    >>> theta = np.array([0.5, -1.0, 0.2])
    >>> G = ref.per_example_grads(theta, X, y, "squared")
    >>> G.shape
    (5, 3)
    >>> r = 2 * (ref.linear_predictor(theta, X, "squared") - y)  # dl/deta
    >>> np.allclose(G, r[:, None] * ref.design(X))
    True
    >>> np.allclose(G.mean(axis=0), ref.gradient(theta, X, y, "squared"))  # unit weights, l2 = 0
    True
    >>> ref.per_example_grads(np.zeros((3, 3)), X, [0, 1, 2, 1, 0], "multinomial").shape  # p = 3 (d+1)
    (5, 9)
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
    """The training objective L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||coef||^2.

    Intercepts are unpenalised (``mask`` in the module Notes).

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    float
        L_w(theta).

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> X, y = np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([0.0, 1.0])
    >>> round(ref.objective(np.zeros(3), X, y, "logistic"), 4)  # log 2
    0.6931
    >>> theta = np.array([1.0, -2.0, 5.0])  # the penalty: 0.5 (1^2 + 2^2), intercept 5 not counted
    >>> round(ref.objective(theta, X, y, "logistic", l2=0.5) - ref.objective(theta, X, y, "logistic"), 4)
    2.5
    >>> l = ref.losses(theta, X, y, "logistic")
    >>> np.isclose(ref.objective(theta, X, y, "logistic", w=[1.0, 3.0]), (1 * l[0] + 3 * l[1]) / 4)  # weighted mean
    True
    """
    X = _as_X(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, W = _as_w(w, X.shape[0])
    coef = _mask(theta) * theta
    return float(w @ losses(theta, X, y, family) / W + l2 * np.sum(coef**2))


def gradient(theta, X, y, family, w=None, l2=0.0):
    """Gradient of the objective, grad L_w = (1/W) sum_i w_i grad l(z_i) + 2 l2 mask * theta.

    Flattened, shape (p,).

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (p,)
        grad L_w(theta), p = d+1, or k (d+1) for "multinomial" (row-major).

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 2))
    >>> y = (X[:, 0] + rng.normal(size=8) > 0).astype(float)
    >>> theta = ref.fit(X, y, "logistic", l2=0.1)
    >>> np.abs(ref.gradient(theta, X, y, "logistic", l2=0.1)).max() < 1e-10  # zero at the optimum
    True
    >>> t, e = np.array([0.3, -0.2, 0.1]), 1e-6 * np.eye(3)  # central differences of the objective
    >>> fd = [(ref.objective(t + e[j], X, y, "logistic", l2=0.1) - ref.objective(t - e[j], X, y, "logistic", l2=0.1)) / 2e-6
    ...       for j in range(3)]
    >>> np.allclose(ref.gradient(t, X, y, "logistic", l2=0.1), fd, atol=1e-8)
    True
    """
    X = _as_X(X)
    theta = _as_theta(theta, X.shape[1], family)
    w, W = _as_w(w, X.shape[0])
    G = per_example_grads(theta, X, y, family)
    return (w @ G) / W + 2.0 * l2 * (_mask(theta) * theta).reshape(-1)


def hessian(theta, X, y, family, w=None, l2=0.0):
    """Explicit Hessian of L_w (penalty included), shape (p, p) in flattened order.

    ::

        Scalar families:  H = (1/W) Z^T diag(w h) Z + 2 l2 diag(mask).
        Multinomial:      block (a, b) of H (each (d+1) x (d+1)) is
                          (1/W) Z^T diag(w_i (delta_ab p_ia - p_ia p_ib)) Z, plus 2 l2 diag(mask).

    ``y`` does not enter (the Hessian of these losses is independent of y); it is accepted
    for a uniform signature.

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,) or None
        Targets; not used (see above).
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (p, p)
        H, symmetric positive semi-definite; p = d+1, or k (d+1) for "multinomial".

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(8, 2)), rng.poisson(1.0, size=8)
    >>> t = np.array([0.3, -0.2, 0.1])
    >>> H = ref.hessian(t, X, y, "poisson", l2=0.1)
    >>> e = 1e-6 * np.eye(3)  # central differences of the gradient
    >>> fd = np.array([ref.gradient(t + e[j], X, y, "poisson", l2=0.1) - ref.gradient(t - e[j], X, y, "poisson", l2=0.1)
    ...                for j in range(3)]) / 2e-6
    >>> np.allclose(H, fd, atol=1e-8), np.allclose(H, H.T)
    (True, True)
    >>> Hm = ref.hessian(np.zeros((3, 3)), X, None, "multinomial")  # k = 3 classes, p = 9
    >>> shift = np.tile([0.0, 0.0, 1.0], 3)  # the same constant added to every intercept
    >>> Hm.shape, np.allclose(Hm @ shift, 0.0)  # a null direction of the multinomial Hessian
    ((9, 9), True)
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

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,) or None
        Targets; not used (the Hessian does not depend on them).
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    v : array_like of shape (p,) or (p, r)
        The vector, or r vectors as columns, in the flattened order of ``theta``.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (p,) or (p, r)
        H v, the shape of ``v``.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, the total weight W is not positive, or ``v`` does
        not have p rows.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(6, 2)), rng.integers(0, 3, size=6)
    >>> theta, V = rng.normal(size=(3, 3)), rng.normal(size=(9, 2))  # k = 3 classes, p = 9, two vectors
    >>> H = ref.hessian(theta, X, y, "multinomial", l2=0.1)
    >>> np.allclose(ref.hvp(theta, X, y, "multinomial", V, l2=0.1), H @ V)
    True
    >>> np.allclose(ref.hvp(theta, X, y, "multinomial", V[:, 0], l2=0.1), H @ V[:, 0])
    True
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
    """Fit theta* = argmin L_w by damped Newton, starting at zeros; returns theta in natural shape.

    Each iteration: g = grad L_w, stop if max|g| <= tol; Newton step s = -H^{-1} g
    (-H^+ g for multinomial, see module doc); Newton decrement lam2 = -g . s; backtracking
    (halving t) until the Armijo condition L(theta + t s) <= L(theta) - 1e-4 t lam2 holds.
    When lam2 is already at rounding level the full step is taken (comparing objective
    values could not tell a decrease from noise there).  Squared loss converges in one step.
    For multinomial, k = n_classes, defaulting to max(y) + 1.

    Parameters
    ----------
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.
    n_classes : int, default None
        k for "multinomial" (ignored otherwise); None means max(y) + 1.
    tol : float, default 1e-10
        Stop when ``max |grad L_w| <= tol``.
    max_iter : int, default 100
        Most Newton iterations; the last iterate is returned without a warning when they run out.

    Returns
    -------
    ndarray of shape (d+1,), or (k, d+1) for "multinomial"
        The fitted ``[coef..., intercept]`` (one row per class for multinomial, with class-wise
        sums of the intercepts equal to zero: the minimum-norm optimum, see the module Notes).

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.
    numpy.linalg.LinAlgError
        If the Hessian of a scalar family is singular (e.g. squared loss with l2 == 0 and
        collinear columns).

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 2))
    >>> y = (X[:, 0] + rng.normal(size=8) > 0).astype(float)
    >>> theta = ref.fit(X, y, "logistic", l2=0.1)
    >>> np.round(theta, 3)  # [coef_1, coef_2, intercept]
    array([ 0.669,  0.432, -0.261])
    >>> np.abs(ref.gradient(theta, X, y, "logistic", l2=0.1)).max() < 1e-10
    True
    >>> np.allclose(uw.LogisticRegression(l2=0.1).fit(X, y).theta_, theta)  # the Rust core agrees
    True
    >>> Theta = ref.fit(X, np.arange(8) % 3, "multinomial", l2=0.1)
    >>> Theta.shape, abs(float(Theta[:, -1].sum())) < 1e-10  # intercepts sum to zero
    ((3, 3), True)
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
    """Parameter influences I(z_m) of the training points, shape (n, p) (or (len(idx), p)).

    Row m is::

        I(z_m) = -H^{-1} (grad l(z_m; theta) + 2 l2 mask * theta) / W

    (H^+ for multinomial).  ``idx`` selects training rows m (default: all).  Upweighting m by
    eps moves theta* by about eps * I(z_m); removing an unweighted point moves it by about
    -I(z_m) (DESIGN.md section 1).

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
        Normally the optimum ``fit(X, y, family, w, l2)``.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.
    idx : array_like of int, default None
        Training rows m to return; None means all.

    Returns
    -------
    ndarray of shape (n, p), or (len(idx), p)
        I(z_m) for each selected m, flattened like ``theta``.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.
    numpy.linalg.LinAlgError
        If the Hessian of a scalar family is singular.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 2))
    >>> y = (X[:, 0] + rng.normal(size=8) > 0).astype(float)
    >>> theta = ref.fit(X, y, "logistic", l2=0.1)
    >>> I = ref.influence_params(theta, X, y, "logistic", l2=0.1)
    >>> I.shape
    (8, 3)
    >>> model = uw.LogisticRegression(l2=0.1).fit(X, y)
    >>> np.allclose(uw.Influence(model, X, y).params(), I)  # the Rust core agrees
    True
    >>> w = np.ones(8)  # the derivative of refits with w_0 = 1 +- eps
    >>> w_up, w_down = w.copy(), w.copy()
    >>> w_up[0], w_down[0] = 1 + 1e-5, 1 - 1e-5
    >>> fd = (ref.fit(X, y, "logistic", w_up, 0.1, tol=1e-13) - ref.fit(X, y, "logistic", w_down, 0.1, tol=1e-13)) / 2e-5
    >>> np.allclose(fd, I[0], atol=1e-7)
    True
    >>> ref.influence_params(theta, X, y, "logistic", l2=0.1, idx=[0, 3]).shape
    (2, 3)
    """
    X, theta, H, W, c = _influence_setup(theta, X, y, family, w, l2)
    G = per_example_grads(theta, X, y, family)
    if idx is not None:
        G = G[np.asarray(idx)]
    return -_solve(H, (G + c).T, family).T / W


def loo_one_step(theta, X, y, family, w=None, l2=0.0, groups=None):
    """Leave-group-out change of the parameters, theta_(-G) - theta*, by one Newton step.

    One Newton step from theta on the objective with the rows of each
    group removed (their weights set to 0, the weighted mean renormalised), from the explicit
    gradient and Hessian of that objective: -H_(-G)^{-1} grad L_(-G)(theta) (H^+ for multinomial).
    ``groups``: a list of index lists (default: each training row alone). Shape (n_groups, p).
    For squared loss the step is exact: it equals the refit without the group.

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
        Normally the optimum ``fit(X, y, family, w, l2)``.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.
    groups : list of list of int, default None
        The groups of training rows removed together, one result row each; None means every
        training row alone.

    Returns
    -------
    ndarray of shape (n_groups, p)
        The one-step change of the flattened parameters when each group is left out.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or a group removes all the weight.
    numpy.linalg.LinAlgError
        If the Hessian without a group is singular (scalar families).

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(6, 2))
    >>> y = X @ [1.0, -2.0] + 0.5 + 0.1 * rng.normal(size=6)
    >>> theta = ref.fit(X, y, "squared", l2=0.1)
    >>> D = ref.loo_one_step(theta, X, y, "squared", l2=0.1)
    >>> D.shape
    (6, 3)
    >>> np.allclose(D[0], ref.fit(X[1:], y[1:], "squared", l2=0.1) - theta)  # exact for squared loss
    True
    >>> ref.loo_one_step(theta, X, y, "squared", l2=0.1, groups=[[0, 1], [2, 3, 4]]).shape
    (2, 3)
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
    """Influence I(z) of a point z = (x_new, y_new) not in the training set, shape (p,).

    Equivalently: the point is present with weight 0.  (X, y, w) define H and W; same formula as
    influence_params.

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
        Normally the optimum ``fit(X, y, family, w, l2)``.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    x_new : array_like of shape (d,)
        Features of the new point.
    y_new : float or int
        Its target (a class id for "multinomial").
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (p,)
        I(z) = -H^{-1} (grad l(z; theta) + 2 l2 mask * theta) / W (H^+ for multinomial).

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.
    numpy.linalg.LinAlgError
        If the Hessian of a scalar family is singular.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    >>> theta = ref.fit(X, y, "squared", l2=0.1)
    >>> x_new, y_new = np.array([0.5, -1.0]), 2.0
    >>> I_new = ref.influence_new_point(theta, X, y, "squared", x_new, y_new, l2=0.1)
    >>> I_new.shape
    (3,)
    >>> X2, y2, w2 = np.vstack([X, x_new]), np.append(y, y_new), np.append(np.ones(6), 0.0)  # present, weight 0
    >>> np.allclose(I_new, ref.influence_params(theta, X2, y2, "squared", w=w2, l2=0.1)[-1])
    True
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

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
        Normally the optimum ``fit(X, y, family, w, l2)``.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    grad_f : array_like of shape (p,) or (r, p)
        grad f(theta) of one function, or of r functions as rows.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (n,), or (r, n)
        grad f . I(z_m) for every training point m (row j for f_j).

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.
    numpy.linalg.LinAlgError
        If the Hessian of a scalar family is singular.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 2))
    >>> y = (X[:, 0] + rng.normal(size=8) > 0).astype(float)
    >>> theta = ref.fit(X, y, "logistic", l2=0.1)
    >>> I = ref.influence_params(theta, X, y, "logistic", l2=0.1)
    >>> s = ref.influence_on(theta, X, y, "logistic", [1.0, 0.0, 0.0], l2=0.1)  # f = coef_1
    >>> s.shape, np.allclose(s, I[:, 0])
    ((8,), True)
    >>> F = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # f_1 = coef_1, f_2 = coef_2 + intercept
    >>> S = ref.influence_on(theta, X, y, "logistic", F, l2=0.1)
    >>> S.shape, np.allclose(S, F @ I.T)
    ((2, 8), True)
    >>> model = uw.LogisticRegression(l2=0.1).fit(X, y)
    >>> np.allclose(uw.Influence(model, X, y).on(F), S)  # the Rust core agrees
    True
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

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
        Normally the optimum ``fit(X, y, family, w, l2)``.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    X_test : array_like of shape (q, d)
        Test features.
    y_test : array_like of shape (q,)
        Test targets.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (q, n)
        S[t, m], the influence of training point m on the loss at test point t.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.
    numpy.linalg.LinAlgError
        If the Hessian of a scalar family is singular.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 2))
    >>> y = (X[:, 0] + rng.normal(size=8) > 0).astype(float)
    >>> X_test, y_test = X[:2] + 0.1, y[:2]
    >>> theta = ref.fit(X, y, "logistic", l2=0.1)
    >>> S = ref.influence_on_loss(theta, X, y, "logistic", X_test, y_test, l2=0.1)
    >>> S.shape
    (2, 8)
    >>> Gt = ref.per_example_grads(theta, X_test, y_test, "logistic")
    >>> np.allclose(S, Gt @ ref.influence_params(theta, X, y, "logistic", l2=0.1).T)
    True
    >>> model = uw.LogisticRegression(l2=0.1).fit(X, y)
    >>> np.allclose(uw.Influence(model, X, y).on_loss(X_test, y_test), S)  # the Rust core agrees
    True
    """
    Gt = per_example_grads(theta, X_test, y_test, family)  # (q, p)
    return influence_on(theta, X, y, family, Gt, w, l2)


def self_influence(theta, X, y, family, w=None, l2=0.0):
    """Self-influence grad l(z_m; theta) . I(z_m) of every training point m, shape (n,).

    The diagonal of the score matrix of the training set on itself; without a penalty it is
    <= 0 (H is positive semi-definite), and the most negative values flag the points the model
    bends towards most.

    Parameters
    ----------
    theta : array_like of shape (d+1,), or (k, d+1) for "multinomial"
        Parameters ``[coef_1..coef_d, intercept]`` (one such row per class for multinomial); the
        flattened shape (p,) is accepted too.
        Normally the optimum ``fit(X, y, family, w, l2)``.
    X : array_like of shape (n, d)
        Features (a 1-D array is one feature column).
    y : array_like of shape (n,)
        Targets: real values ("squared"), 0/1 ("logistic"), counts ("poisson") or integer class
        ids 0..k-1 ("multinomial").
    family : {"squared", "logistic", "poisson", "multinomial"}
        The loss (``FAMILIES``).
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * ||coef||^2`` (not l2/2), intercepts unpenalised.

    Returns
    -------
    ndarray of shape (n,)
        grad l(z_m; theta) . I(z_m) for every training point m.

    Raises
    ------
    ValueError
        If ``family`` is unknown, the shapes of the arguments do not match, or the total weight W is not positive.
    numpy.linalg.LinAlgError
        If the Hessian of a scalar family is singular.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    >>> theta = ref.fit(X, y, "squared")
    >>> s = ref.self_influence(theta, X, y, "squared")
    >>> s.shape, bool(np.all(s <= 0))
    ((6,), True)
    >>> np.allclose(s, np.diag(ref.influence_on_loss(theta, X, y, "squared", X, y)))
    True
    >>> model = uw.LinearRegression().fit(X, y)
    >>> np.allclose(uw.Influence(model, X, y).self_influence(), s)  # the Rust core agrees
    True
    """
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
    """Number of parameters p = sum_l h_l (h_{l-1} + 1) of a network.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.

    Returns
    -------
    int
        p, the length of the flat ``theta``.

    Raises
    ------
    ValueError
        If ``sizes`` has fewer than two entries or a non-positive one.

    Examples
    --------
    >>> uw.reference.mlp_n_params([2, 3, 1])  # 3 (2 + 1) + 1 (3 + 1)
    13
    >>> uw.reference.mlp_n_params([4, 3])  # no hidden layer: the multinomial GLM's k (d+1)
    15
    """
    sizes = _check_sizes(sizes)
    return sum(fan_out * (fan_in + 1) for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True))


def mlp_unflatten(theta, sizes):
    """Split a flat theta (p,) into the layers [(W_1, b_1), ..., (W_L, b_L)] (copies).

    W_l has shape (h_l, h_{l-1}) and b_l (h_l,); the inverse of :func:`mlp_flatten`.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.

    Returns
    -------
    list of tuple of ndarray
        ``[(W_1, b_1), ..., (W_L, b_L)]``, input layer first.

    Raises
    ------
    ValueError
        If ``sizes`` is invalid or ``theta`` does not have p entries.

    Examples
    --------
    >>> ref = uw.reference
    >>> layers = ref.mlp_unflatten(np.arange(13.0), [2, 3, 1])
    >>> [(W.shape, b.shape) for W, b in layers]
    [((3, 2), (3,)), ((1, 3), (1,))]
    >>> W1, b1 = layers[0]  # Theta_1 = [W_1 | b_1] is theta[:9], row by row
    >>> W1
    array([[0., 1.],
           [3., 4.],
           [6., 7.]])
    >>> b1
    array([2., 5., 8.])
    >>> np.array_equal(ref.mlp_flatten(layers), np.arange(13.0))
    True
    """
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
    """Flatten the layers [(W_l, b_l)] into theta: each Theta_l = [W_l | b_l] row-major, input layer first.

    With sizes [d, k] (no hidden layer) this is the multinomial GLM's (k, d+1) theta flattened,
    or the squared GLM's (d+1,) when k = 1.

    Parameters
    ----------
    layers : sequence of (array_like, array_like)
        ``(W_l, b_l)`` per layer, W_l of shape (h_l, h_{l-1}) and b_l of shape (h_l,).

    Returns
    -------
    ndarray of shape (p,)
        The flat parameters, float64.

    Raises
    ------
    ValueError
        If a W_l is not 2-D or its b_l does not have one entry per row of W_l.

    Examples
    --------
    >>> ref = uw.reference
    >>> ref.mlp_flatten([(np.ones((2, 3)), np.zeros(2))])  # [W | b] row by row
    array([1., 1., 1., 0., 1., 1., 1., 0.])
    >>> theta = np.random.default_rng(0).normal(size=ref.mlp_n_params([2, 3, 1]))
    >>> np.array_equal(ref.mlp_flatten(ref.mlp_unflatten(theta, [2, 3, 1])), theta)  # round trip
    True
    """
    blocks = []
    for W, b in layers:
        W = np.asarray(W, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"layer shapes W {W.shape}, b {b.shape} do not match")
        blocks.append(np.hstack([W, b[:, None]]).reshape(-1))
    return np.concatenate(blocks)


def mlp_penalty_mask(sizes):
    """Penalty mask M (p,): 1 on weight entries, 0 on bias entries.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.

    Returns
    -------
    ndarray of shape (p,)
        M, in the layout of the flat ``theta``.

    Raises
    ------
    ValueError
        If ``sizes`` is invalid.

    Examples
    --------
    >>> uw.reference.mlp_penalty_mask([2, 2])  # one layer, two rows [w, w, b]
    array([1., 1., 0., 1., 1., 0.])
    >>> int(uw.reference.mlp_penalty_mask([2, 3, 1]).sum())  # 3 x 2 + 1 x 3 weights
    9
    """
    sizes = _check_sizes(sizes)
    return mlp_flatten([(np.ones((fan_out, fan_in)), np.zeros(fan_out)) for _, fan_out, fan_in in _layer_slices(sizes)])


def mlp_flat_directions(sizes, head, l2=0.0):
    """Orthonormal columns (p, f) spanning the directions along which every l_i and L_w are constant.

    softmax head: softmax(h + c 1) = softmax(h), so shifting every output bias b_L by the same
    amount is flat; with l2 == 0 so is W_L -> W_L + 1 v^T for each unit vector v (the output moves
    by (v . a_{L-1}) 1).  squared head: none (f = 0).  With no hidden layer these span the null
    space of the multinomial GLM's Hessian.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    l2 : float, default 0.0
        Ridge strength; when nonzero only the output-bias shift is flat (the penalty grows along
        the others).

    Returns
    -------
    ndarray of shape (p, f)
        Orthonormal columns: f = 1 (softmax, l2 != 0), h_{L-1} + 1 (softmax, l2 == 0) or 0 (squared).

    Raises
    ------
    ValueError
        If ``sizes`` or ``head`` is invalid.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> ref.mlp_flat_directions(sizes, "softmax", l2=0.1).shape  # the output-bias shift
    (17, 1)
    >>> N = ref.mlp_flat_directions(sizes, "softmax")  # l2 == 0: also W_L -> W_L + 1 v^T
    >>> N.shape, np.allclose(N.T @ N, np.eye(4))
    ((17, 4), True)
    >>> l = ref.mlp_losses(theta, X, y, sizes, "tanh", "softmax")
    >>> np.allclose(ref.mlp_losses(theta + 3.0 * N @ [1.0, -2.0, 0.5, 1.0], X, y, sizes, "tanh", "softmax"), l)
    True
    >>> ref.mlp_flat_directions(sizes, "squared").shape
    (17, 0)
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
    """Forward pass: the outputs h = z_L, shape (n, k).

    With ``return_all`` also zs = [z_1..z_L] and acts = [a_0..a_{L-1}], where
    a_0 = x, z_l = W_l a_{l-1} + b_l, a_l = phi(z_l) (l < L); the output has no activation.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    return_all : bool, default False
        Also return the pre-activations and activations of every layer.

    Returns
    -------
    h : ndarray of shape (n, k)
        The outputs (logits for the softmax head).
    zs : list of ndarray
        Only with ``return_all``: z_l of shape (n, h_l), l = 1..L (zs[-1] is h).
    acts : list of ndarray
        Only with ``return_all``: a_l of shape (n, h_l), l = 0..L-1 (acts[0] is X).

    Raises
    ------
    ValueError
        If ``sizes`` or ``activation`` is invalid, ``X`` does not have ``sizes[0]`` columns, or
        ``theta`` does not have p entries.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> h, zs, acts = ref.mlp_forward(theta, X, sizes, "tanh", return_all=True)
    >>> h.shape, [z.shape for z in zs], [a.shape for a in acts]
    ((5, 2), [(5, 3), (5, 2)], [(5, 2), (5, 3)])
    >>> (W1, b1), (W2, b2) = ref.mlp_unflatten(theta, sizes)
    >>> np.allclose(h, np.tanh(X @ W1.T + b1) @ W2.T + b2)
    True
    >>> Theta = rng.normal(size=(3, 3))  # no hidden layer: the multinomial GLM's linear predictor
    >>> np.allclose(ref.mlp_forward(Theta.reshape(-1), X, [2, 3], "tanh"), ref.linear_predictor(Theta, X, "multinomial"))
    True
    """
    _, X, layers = _mlp_setup(theta, X, sizes, activation)
    zs, acts = _forward_pass(layers, X, activation)
    return (zs[-1], zs, acts) if return_all else zs[-1]


def mlp_predict(theta, X, sizes, activation, head, kind="linear"):
    """Predictions: kind "linear" gives h (n, k); "mean" gives softmax(h) for the softmax head, h for the squared head.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    kind : {"linear", "mean"}, default "linear"
        The outputs h, or the mean response (class probabilities for the softmax head).

    Returns
    -------
    ndarray of shape (n, k)
        The predictions.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, or ``kind`` is unknown.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> P = ref.mlp_predict(theta, X, sizes, "tanh", "softmax", kind="mean")
    >>> P.shape, np.allclose(P.sum(axis=1), 1.0)
    ((5, 2), True)
    >>> h = ref.mlp_predict(theta, X, sizes, "tanh", "softmax")  # kind="linear"
    >>> np.allclose(P, np.exp(h) / np.exp(h).sum(axis=1, keepdims=True))
    True
    >>> np.array_equal(ref.mlp_predict(theta, X, sizes, "tanh", "squared", kind="mean"), h)
    True
    """
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
    """Per-example loss l(z_i; theta), shape (n,): logsumexp(h_i) - h_{i, y_i} or ||h_i - y_i||^2.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.

    Returns
    -------
    ndarray of shape (n,)
        l(z_i; theta), unweighted and without the penalty.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, or ``y`` does not fit the head (class ids 0..k-1, or targets (n, k)).

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> h = ref.mlp_forward(theta, X, sizes, "tanh")
    >>> l = ref.mlp_losses(theta, X, y, sizes, "tanh", "softmax")
    >>> l.shape, np.allclose(l, np.log(np.exp(h).sum(axis=1)) - h[np.arange(5), y])
    ((5,), True)
    >>> Y = rng.normal(size=(5, 2))  # squared head: real targets, one column per output
    >>> np.allclose(ref.mlp_losses(theta, X, Y, sizes, "tanh", "squared"), ((h - Y) ** 2).sum(axis=1))
    True
    """
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
    """Per-example gradients grad_theta l(z_i; theta), shape (n, p), by backpropagation from s_L = dl/dh.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.

    Returns
    -------
    ndarray of shape (n, p)
        Row i is grad l(z_i; theta) in the layout of ``theta``; unweighted, no penalty.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, or ``y`` does not fit the head.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> G = ref.mlp_per_example_grads(theta, X, y, sizes, "gelu", "softmax")
    >>> G.shape
    (5, 17)
    >>> e = 1e-6 * np.eye(17)  # central differences of the losses
    >>> fd = np.array([ref.mlp_losses(theta + e[j], X, y, sizes, "gelu", "softmax")
    ...                - ref.mlp_losses(theta - e[j], X, y, sizes, "gelu", "softmax") for j in range(17)]).T / 2e-6
    >>> np.allclose(G, fd, atol=1e-8)
    True
    >>> np.allclose(G.mean(axis=0), ref.mlp_gradient(theta, X, y, sizes, "gelu", "softmax"))  # unit weights, l2 = 0
    True
    """
    _check_head(head)
    _, X, layers = _mlp_setup(theta, X, sizes, activation)
    zs, acts = _forward_pass(layers, X, activation)
    h = zs[-1]
    r = _head_residual(h, _mlp_targets(y, h.shape[0], h.shape[1], head), head)
    return _grad_from_backward(_backward(layers, zs, r, activation), acts)


def mlp_objective(theta, X, y, sizes, activation, head, w=None, l2=0.0):
    """The training objective L_w(theta) = (1/W) sum_i w_i l_i + l2 sum_l ||W_l||^2 (biases unpenalised).

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.

    Returns
    -------
    float
        L_w(theta).

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, ``y`` does not fit the head, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> l = ref.mlp_losses(theta, X, y, sizes, "tanh", "softmax")
    >>> M = ref.mlp_penalty_mask(sizes)
    >>> np.isclose(ref.mlp_objective(theta, X, y, sizes, "tanh", "softmax", l2=0.1), l.mean() + 0.1 * np.sum((M * theta) ** 2))
    True
    >>> Theta = rng.normal(size=(3, 3))  # no hidden layer: the multinomial GLM's objective
    >>> np.isclose(ref.mlp_objective(Theta, X, y, [2, 3], "tanh", "softmax", l2=0.1), ref.objective(Theta, X, y, "multinomial", l2=0.1))
    True
    """
    l = mlp_losses(theta, X, y, sizes, activation, head)
    w, W = _as_w(w, l.shape[0])
    coef = mlp_penalty_mask(sizes) * np.asarray(theta, dtype=np.float64).reshape(-1)
    return float(w @ l / W + l2 * np.sum(coef**2))


def mlp_gradient(theta, X, y, sizes, activation, head, w=None, l2=0.0):
    """Gradient of the objective, grad L_w = (1/W) sum_i w_i grad l_i + 2 l2 M theta, shape (p,).

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.

    Returns
    -------
    ndarray of shape (p,)
        grad L_w(theta), in the layout of ``theta``.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, ``y`` does not fit the head, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 1]  # d = 2 features, one hidden layer of 3 units, k = 1 output
    >>> X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 1 (3 + 1) = 13
    >>> e, f = 1e-6 * np.eye(13), lambda t: ref.mlp_objective(t, X, y, sizes, "tanh", "squared", l2=0.1)
    >>> fd = np.array([f(theta + e[j]) - f(theta - e[j]) for j in range(13)]) / 2e-6  # central differences
    >>> np.allclose(ref.mlp_gradient(theta, X, y, sizes, "tanh", "squared", l2=0.1), fd, atol=1e-8)
    True
    >>> est = uw.MLPRegressor(hidden=(3,), l2=0.1).fit(X, y)  # trained by the Rust core (tanh)
    >>> np.abs(ref.mlp_gradient(est.theta_, X, y, sizes, "tanh", "squared", l2=0.1)).max() < 1e-6  # a stationary point
    True
    """
    Gi = mlp_per_example_grads(theta, X, y, sizes, activation, head)
    w, W = _as_w(w, Gi.shape[0])
    return w @ Gi / W + 2.0 * l2 * mlp_penalty_mask(sizes) * np.asarray(theta, dtype=np.float64).reshape(-1)


def mlp_jacobians(theta, X, sizes, activation):
    """Output Jacobians J_i = dh_i/dtheta, shape (n, k, p): row c is backpropagation from s_L = e_c.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.

    Returns
    -------
    ndarray of shape (n, k, p)
        J[i, c] = grad_theta h_ic.

    Raises
    ------
    ValueError
        If ``sizes`` or ``activation`` is invalid, ``X`` does not have ``sizes[0]`` columns, or
        ``theta`` does not have p entries.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> J = ref.mlp_jacobians(theta, X, sizes, "tanh")
    >>> J.shape
    (5, 2, 17)
    >>> e = 1e-6 * np.eye(17)  # central differences of the outputs
    >>> fd = np.stack([ref.mlp_forward(theta + e[j], X, sizes, "tanh") - ref.mlp_forward(theta - e[j], X, sizes, "tanh")
    ...                for j in range(17)], axis=-1) / 2e-6
    >>> np.allclose(J, fd, atol=1e-8)
    True
    """
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
    """Gauss-Newton matrix G = (1/W) sum_i w_i J_i^T Lambda_i J_i + 2 l2 diag(M), shape (p, p) (symmetric PSD).

    Lambda_i = d^2 l / dh^2 at h_i: diag(p_i) - p_i p_i^T (softmax head, p_i = softmax(h_i)) or
    2 I (squared head).  ``y`` does not enter (Lambda does not depend on it); it is accepted for a
    uniform signature.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k), or None
        Targets; not used (see above).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.

    Returns
    -------
    ndarray of shape (p, p)
        G, symmetric positive semi-definite.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 1]  # d = 2 features, one hidden layer of 3 units, k = 1 output
    >>> X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 1 (3 + 1) = 13
    >>> G = ref.mlp_gauss_newton(theta, X, y, sizes, "tanh", "squared", l2=0.1)
    >>> G.shape, np.allclose(G, G.T), bool(np.linalg.eigvalsh(G).min() > 0)
    ((13, 13), True, True)
    >>> J = ref.mlp_jacobians(theta, X, sizes, "tanh")[:, 0, :]  # k = 1: Lambda = 2
    >>> np.allclose(G, 2 * J.T @ J / 6 + 0.2 * np.diag(ref.mlp_penalty_mask(sizes)))
    True
    >>> t = rng.normal(size=3)  # no hidden layer, squared head: G is the Hessian (the squared GLM's)
    >>> G0 = ref.mlp_gauss_newton(t, X, y, [2, 1], "tanh", "squared", l2=0.1)
    >>> np.allclose(G0, ref.mlp_hessian(t, X, y, [2, 1], "tanh", "squared", l2=0.1))
    True
    >>> np.allclose(G0, ref.hessian(t, X, y, "squared", l2=0.1))
    True
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
    its inputs (second-order chain rule)::

      a_l = phi(z_l), l < L:          sum_j g_lj phi''(z_lj) Dz_lj Dz_lj^T,   g_l = dl/da_l = W_{l+1}^T s_{l+1}
      z_l = W_l a_{l-1} + b_l, l >= 2: sum_{j,k} s_lj (e_{W_l[j,k]} Da_{l-1,k}^T + Da_{l-1,k} e_{W_l[j,k]}^T)

    with s_l = dl/dz_l from backpropagation, Dz_l = dz_l/dtheta and Da_l = da_l/dtheta from
    forward mode, e_{W_l[j,k]} the unit vector of that parameter.  (z_1 = W_1 x + b_1 is linear in
    theta, so it adds nothing; with no hidden layer T_i = 0 and H = G.)  Exact up to rounding:
    central differences of mlp_gradient (step 1e-5) agree to ~1e-9 relative, their own error.
    ``y`` enters through dl/dh.  For "relu", phi'' = 0: the kinks are ignored.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.

    Returns
    -------
    ndarray of shape (p, p)
        H, symmetric; it may be indefinite away from a minimum.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, ``y`` does not fit the head, or the total weight W is not positive.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> H = ref.mlp_hessian(theta, X, y, sizes, "gelu", "softmax", l2=0.1)
    >>> e, g = 1e-5 * np.eye(17), lambda t: ref.mlp_gradient(t, X, y, sizes, "gelu", "softmax", l2=0.1)
    >>> fd = np.array([g(theta + e[j]) - g(theta - e[j]) for j in range(17)]) / 2e-5  # central differences
    >>> H.shape, np.allclose(H, fd, atol=1e-8), np.allclose(H, H.T)
    ((17, 17), True, True)
    >>> np.allclose(H, ref.mlp_gauss_newton(theta, X, y, sizes, "gelu", "softmax", l2=0.1))  # hidden layer: H != G
    False
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
    """Gauss-Newton-vector product G v for v (p,) or (p, r) (G formed explicitly).

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k), or None
        Targets; not used (G does not depend on them).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    v : array_like of shape (p,) or (p, r)
        The vector, or r vectors as columns, in the layout of ``theta``.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.

    Returns
    -------
    ndarray of shape (p,) or (p, r)
        G v, the shape of ``v``.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, the total weight W is not positive, or ``v`` does not have p rows.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> V = rng.normal(size=(17, 2))
    >>> G = ref.mlp_gauss_newton(theta, X, y, sizes, "tanh", "softmax", l2=0.1)
    >>> np.allclose(ref.mlp_gnvp(theta, X, y, sizes, "tanh", "softmax", V, l2=0.1), G @ V)
    True
    """
    G = mlp_gauss_newton(theta, X, y, sizes, activation, head, w, l2)
    return G @ _as_v(v, G.shape[0])


def mlp_hvp(theta, X, y, sizes, activation, head, v, w=None, l2=0.0):
    """Hessian-vector product H v for v (p,) or (p, r) (H formed explicitly).

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    v : array_like of shape (p,) or (p, r)
        The vector, or r vectors as columns, in the layout of ``theta``.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.

    Returns
    -------
    ndarray of shape (p,) or (p, r)
        H v, the shape of ``v``.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, ``y`` does not fit the head, the total weight W is not positive, or ``v`` does not
        have p rows.

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 2]  # d = 2 features, one hidden layer of 3 units, k = 2 outputs
    >>> X, y = rng.normal(size=(5, 2)), np.array([0, 1, 1, 0, 1])
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 2 (3 + 1) = 17
    >>> v = rng.normal(size=17)
    >>> H = ref.mlp_hessian(theta, X, y, sizes, "tanh", "softmax", l2=0.1)
    >>> np.allclose(ref.mlp_hvp(theta, X, y, sizes, "tanh", "softmax", v, l2=0.1), H @ v)
    True
    """
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
    """Parameter influences I(z_m) = -K^{-1} (grad l_m + 2 l2 M theta) / W, shape (n, p) (or (len(idx), p)).

    K = G ("gauss-newton") or H ("hessian"), plus damping * I.  Softmax head with damping == 0:
    K is singular along mlp_flat_directions (output-bias shift; with l2 == 0 also W_L + 1 v^T),
    and the right-hand sides are orthogonal to them, so K is inverted on their orthogonal
    complement (_solve_off_flat); the rows are orthogonal to the flat directions.  With no
    hidden layer this is the multinomial GLM's minimum-norm influence.  Otherwise np.linalg.solve.
    theta is whatever is given: nothing here assumes a minimiser.

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.
    damping : float, default 0.0
        Added to the diagonal of K.
    curvature : {"gauss-newton", "hessian"}, default "gauss-newton"
        K = G (:func:`mlp_gauss_newton`) or H (:func:`mlp_hessian`).
    idx : array_like of int, default None
        Training rows m to return; None means all.

    Returns
    -------
    ndarray of shape (n, p), or (len(idx), p)
        I(z_m) for each selected training point m, in the layout of ``theta``.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, ``y`` does not fit the head, ``curvature`` is unknown, or the total weight W is not
        positive.
    numpy.linalg.LinAlgError
        If K is singular (outside the softmax flat directions handled above).

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 1]  # d = 2 features, one hidden layer of 3 units, k = 1 output
    >>> X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 1 (3 + 1) = 13
    >>> I = ref.mlp_influence_params(theta, X, y, sizes, "tanh", "squared", l2=0.01, damping=0.1)
    >>> I.shape
    (6, 13)
    >>> est = uw.MLPRegressor(hidden=(3,), l2=0.01)  # the Rust core at the same theta
    >>> est.set_theta(theta, n_features=2)
    >>> np.allclose(uw.Influence(est, X, y, damping=0.1).params(), I)
    True
    >>> Xc, yc, Theta = X, np.array([0, 1, 2, 0, 1, 2]), rng.normal(size=(3, 3))  # no hidden layer, softmax: the GLM's
    >>> np.allclose(ref.mlp_influence_params(Theta, Xc, yc, [2, 3], "tanh", "softmax", l2=0.1),
    ...             ref.influence_params(Theta, Xc, yc, "multinomial", l2=0.1))
    True
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
    """Score matrix S (q, n): S[t, m] = grad l(z_t; theta) . I(z_m); S[t, m] < 0: upweighting m lowers the loss at t.

    I(z_m) as in :func:`mlp_influence_params` (same ``w``, ``l2``, ``damping``, ``curvature``).

    Parameters
    ----------
    theta : array_like of shape (p,)
        Flat parameters: per layer Theta_l = [W_l | b_l] row-major, input layer first
        (:func:`mlp_flatten`); any array of p entries is flattened.
    X : array_like of shape (n, d)
        Features, d = ``sizes[0]``.
    y : array_like of shape (n,) or (n, k)
        Class ids 0..k-1 (softmax head), or real targets (n, k) (squared head; (n,) when k = 1).
    sizes : sequence of int
        Layer widths [d, h_1, ..., h_{L-1}, k]: at least two, all positive.
    activation : {"tanh", "relu", "gelu"}
        Hidden-layer nonlinearity phi (``ACTIVATIONS``); no activation after the last layer.
    head : {"softmax", "squared"}
        Output loss (``HEADS``): logsumexp(h) - h_y, or ||h - y||^2.
    X_test : array_like of shape (q, d)
        Test features.
    y_test : array_like of shape (q,) or (q, k)
        Test targets, like ``y``.
    w : array_like of shape (n,), default None
        Weights w_i >= 0 with a positive total W; None means all ones.
    l2 : float, default 0.0
        Ridge strength: the penalty is ``l2 * sum_l ||W_l||^2`` (not l2/2), biases unpenalised.
    damping : float, default 0.0
        Added to the diagonal of K.
    curvature : {"gauss-newton", "hessian"}, default "gauss-newton"
        K = G (:func:`mlp_gauss_newton`) or H (:func:`mlp_hessian`).

    Returns
    -------
    ndarray of shape (q, n)
        S[t, m], the influence of training point m on the loss at test point t.

    Raises
    ------
    ValueError
        If ``sizes``, ``activation`` or ``head`` is invalid, the shapes of the arguments do not
        match, a target does not fit the head, ``curvature`` is unknown, or the total weight W is
        not positive.
    numpy.linalg.LinAlgError
        If K is singular (outside the softmax flat directions).

    Examples
    --------
    >>> ref = uw.reference
    >>> rng = np.random.default_rng(0)
    >>> sizes = [2, 3, 1]  # d = 2 features, one hidden layer of 3 units, k = 1 output
    >>> X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    >>> theta = 0.5 * rng.normal(size=ref.mlp_n_params(sizes))  # p = 3 (2 + 1) + 1 (3 + 1) = 13
    >>> X_test, y_test = rng.normal(size=(2, 2)), rng.normal(size=2)
    >>> S = ref.mlp_influence_on_loss(theta, X, y, sizes, "tanh", "squared", X_test, y_test, l2=0.01, damping=0.1)
    >>> S.shape
    (2, 6)
    >>> Gt = ref.mlp_per_example_grads(theta, X_test, y_test, sizes, "tanh", "squared")
    >>> np.allclose(S, Gt @ ref.mlp_influence_params(theta, X, y, sizes, "tanh", "squared", l2=0.01, damping=0.1).T)
    True
    >>> est = uw.MLPRegressor(hidden=(3,), l2=0.01)  # the Rust core at the same theta
    >>> est.set_theta(theta, n_features=2)
    >>> np.allclose(uw.Influence(est, X, y, damping=0.1).on_loss(X_test, y_test), S)
    True
    """
    Gt = mlp_per_example_grads(theta, X_test, y_test, sizes, activation, head)
    I = mlp_influence_params(theta, X, y, sizes, activation, head, w, l2, damping, curvature)
    return Gt @ I.T
