"""Batched solvers for logistic regression: every layer (and every C) in one loop.

For each layer ``l`` and column ``k`` (one column per value of C) they minimize

    mean_i [softplus(z_i) - y_i z_i] + l2[l, k] / 2 * |w|^2 + l1[l, k] * |w|_1,   z_i = x_il . w + b

which is scikit-learn's ``C * sum(log-loss) + penalty`` divided by ``C * n``: same minimizer,
with ``l2 = 1 / (C n)`` (L2) or ``l1 = 1 / (C n)`` (L1); the intercept ``b`` is not penalized
(as in scikit-learn's lbfgs and saga). Convergence: max |(pseudo-)gradient| <= tol per column
(scikit-learn's lbfgs ``gtol`` on the same scaled objective).

L2, :func:`solve`: L-BFGS. On activations the cost is reading ``X`` [L, n, d]: one iteration reads
it twice, for ``X @ p`` (the direction's logits, all columns at once) and for the gradient
``R^T X``. The line search is free, because the logits along the step are ``Z + t * (X @ p)``: a
safeguarded Newton search on that line, in float64, costs O(L n K). Activations are strongly
anisotropic, which makes plain L-BFGS slow on them, so the initial inverse Hessian of the
two-loop recursion is exact on each layer's top principal directions (a randomized
eigen-sketch, Halko et al. 2011, rank 128, its products in bfloat16 where matrix units make
that fast): a few times fewer iterations.

L1, :func:`solve_l1`: working sets (glmnet's strong-rule idea; Johnson & Guestrin 2015): few units
are non-zero, so each round gathers the non-zero units plus the worst violators of optimality into
[L, n, M], solves there, and checks optimality over all units with one full gradient pass. The
working-set solver is OWL-QN (Andrew & Gao 2007) with two changes that cut its iterations several
times on correlated units: the same principal-direction preconditioner (on the working set), and
the sign filter of the direction applied to the units at zero only (a unit leaves zero only
downhill; non-zero units keep the quasi-Newton component, and the orthant projection and line
search handle sign changes; where the filtered direction is not a descent direction, steepest
descent in the orthant replaces it). Working sets of at most ``NEWTON_MAX`` units are solved by
an orthant-wise Newton method instead (the exact Hessian of the free units, Levenberg-Marquardt
damped). C values run from small to large, each warm-started from the previous solution.

The L-BFGS / OWL-QN loop retires converged layers from the batch (see :func:`solve`), so a few
slow layers do not make every iteration pay for the whole stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _line_search(Z, Zp, yb, wp, pp, l2, slope_l1, active, iters: int = 12):
    """Step t [L, K] (float64) minimizing phi(t) = f(Z + t Zp) on the line; 0 where no decrease."""
    lo = torch.zeros(Z.shape[:2], dtype=torch.float64, device=Z.device)
    hi = torch.full_like(lo, float("inf"))
    t = torch.ones_like(lo)

    def derivs(t):  # phi'(t), phi''(t): [L, K]
        s = torch.sigmoid(Z + t.unsqueeze(-1) * Zp)
        d1 = ((s - yb) * Zp).mean(-1) + l2 * (wp + t * pp) + slope_l1
        return d1, (s * (1 - s) * Zp * Zp).mean(-1) + l2 * pp

    def phi(t):
        zt = Z + t.unsqueeze(-1) * Zp
        return (F.softplus(zt) - yb * zt).mean(-1) + l2 * (t * wp + 0.5 * t * t * pp) + t * slope_l1

    d0 = ((torch.sigmoid(Z) - yb) * Zp).mean(-1) + l2 * wp + slope_l1
    for _ in range(iters):  # safeguarded Newton on phi' (phi is convex)
        d1, d2 = derivs(t)
        if bool((d1.abs() <= 1e-3 * d0.abs()).all()):
            break
        lo = torch.where(d1 < 0, t, lo)
        hi = torch.where(d1 >= 0, t, hi)
        newton = t - d1 / d2.clamp(min=1e-30)
        cap = 4 * torch.maximum(lo, t)
        fallback = torch.where(torch.isinf(hi), cap, 0.5 * (lo + hi))
        t = torch.where((newton > lo) & (newton < hi) & (newton < cap), newton, fallback)
    ok = phi(t) <= phi(torch.zeros_like(t)) + 1e-4 * t * d0
    t = torch.where(ok, t, lo)  # phi'(lo) < 0, so phi(lo) < phi(0) when lo > 0
    return torch.where(active & (d0 < 0), t, torch.zeros_like(t))


def _top_eigen(Xs, rank: int, seed: int, power: int = 2):
    """Top ``rank`` eigenpairs of each layer's covariance Xs^T Xs / n: V [L, d, rank], lam [L, rank].

    The products with ``Xs`` run in bfloat16 where matrix units make that several times faster
    (the eigenpairs only shape the preconditioner, not the solution).
    """
    L, n, d = Xs.shape
    dt = _hessian_dtype(Xs.device)
    Xb = Xs.to(dt)
    gen = torch.Generator(device=Xs.device).manual_seed(seed)
    Q = torch.randn(L, d, min(rank + 10, d), generator=gen, device=Xs.device)
    for _ in range(power):  # randomized subspace iteration, 10 extra columns
        P = torch.bmm(Xb, torch.linalg.qr(Q).Q.to(dt))  # [L, n, q]
        Q = torch.linalg.qr(torch.bmm(P.transpose(1, 2), Xb).transpose(1, 2).float()).Q
    XQ = torch.bmm(Xb, Q.to(dt)).double()  # [L, n, q]
    lam, U = torch.linalg.eigh(torch.bmm(XQ.transpose(1, 2), XQ) / n)  # ascending
    return torch.bmm(Q, U[..., -rank:].float()), lam[..., -rank:].clamp(min=0)


def logits(Xs, th):
    """[L, K, n] float64 logits of parameters th [L, K, d+1] (last entry the intercept)."""
    return (torch.bmm(th[..., :-1], Xs.transpose(1, 2)) + th[..., -1:]).double()


def gradient(Xs, yb, th, Z, l2):
    """Gradient [L, K, d+1] (float32) of the smooth part at th with logits Z [L, K, n]."""
    R = ((torch.sigmoid(Z) - yb) / Xs.shape[1]).float()  # [L, K, n]
    g = torch.empty_like(th)
    g[..., :-1] = torch.bmm(R, Xs) + l2.float().unsqueeze(-1) * th[..., :-1]
    g[..., -1] = R.sum(-1)
    return g


def pseudo_gradient(th, g, l1):
    """Minimum-norm subgradient [L, K, d+1] of the full objective."""
    w, gw, lam = th[..., :-1], g[..., :-1], l1.float().unsqueeze(-1)
    pg = g.clone()
    pg[..., :-1] = torch.where(w != 0, gw + lam * torch.sign(w), torch.sign(gw) * (gw.abs() - lam).clamp(min=0))
    return pg


def initial_theta(y, L: int, K: int, d: int):
    """Zero weights and the intercept of the class prior: [L, K, d+1]."""
    theta = torch.zeros(L, K, d + 1, device=y.device)
    prior = y.double().mean().clamp(1e-6, 1 - 1e-6)
    theta[..., d] = float(torch.log(prior / (1 - prior)))
    return theta


def solve(
    Xs,
    y,
    l2,
    max_iter=300,
    tol=1e-4,
    memory=10,
    rank=128,
    seed=0,
    callback=None,
    l1=None,
    theta0=None,
    mask=None,
    power=2,
):
    """L-BFGS on every (layer, column) at once; OWL-QN when ``l1`` is given.

    Layers whose columns have all converged leave the batch once they are a quarter of it (the
    data of the layers still running is copied once then), so a few slow layers do not make every
    iteration pay for the whole stack.

    Args:
        Xs: [L, n, d] float32 design (already standardized), layer-major.
        y: [n] float32 labels in {0, 1}.
        l2: [L, K] L2 strengths.
        max_iter: iteration cap (per column).
        tol: max |gradient| at which a column has converged: a float, or [L, K] / [L, 1].
        memory: number of L-BFGS correction pairs.
        rank: rank of the principal-direction preconditioner (0: plain L-BFGS).
        seed: seeds the randomized eigen-sketch of the preconditioner.
        power: subspace iterations of that sketch.
        callback: called as ``callback(iteration, theta, gradient)`` before each step, with the
            layers still in the batch, and ``rows`` [L'] (their indices) as a keyword.
        l1: [L, K] L1 strengths: OWL-QN (Andrew & Gao 2007: L-BFGS on the pseudo-gradient, steps
            kept in the current orthant).
        theta0: [L, K, d+1] warm start (default: zero weights, the prior's intercept).
        mask: [L, K, d] units allowed to be non-zero (default: all).

    Returns:
        theta [L, K, d + 1] (float32; last entry the intercept), n_iter [L, K] (int64),
        converged [L, K] (bool).
    """
    L, n, d = Xs.shape
    K, dev = l2.shape[1], Xs.device
    l2 = l2.to(dev, torch.float64)
    yb = y.to(dev, torch.float64).view(1, 1, n)
    theta = initial_theta(y.to(dev), L, K, d) if theta0 is None else theta0.clone()
    keep = None if mask is None else torch.cat([mask, mask.new_ones(L, K, 1)], -1).float()  # [L, K, d+1]
    sparse = l1 is not None
    l1 = torch.zeros_like(l2) if l1 is None else l1.to(dev, torch.float64)
    out_theta, out_iter = torch.empty_like(theta), torch.zeros(L, K, dtype=torch.int64, device=dev)
    out_ok = torch.zeros(L, K, dtype=torch.bool, device=dev)
    rows = torch.arange(L, device=dev)  # the layers still in the batch

    def smooth_grad(th, Z):
        g = gradient(Xs, yb, th, Z, l2)
        return g if keep is None else g * keep

    def pseudo(th, gs):
        return pseudo_gradient(th, gs, l1) if sparse else gs

    def objective(th, Z):  # full objective [L, K] float64
        w = th[..., :d].double()
        return (F.softplus(Z) - yb * Z).mean(-1) + 0.5 * l2 * w.pow(2).sum(-1) + l1 * w.abs().sum(-1)

    V, lam = _top_eigen(Xs, rank, seed, power) if 0 < rank < min(n, d) else (None, None)  # [L, d, r], [L, r]

    def down(v):  # coordinates [L, K, r] of v [L, K, d+1] on the top principal directions
        return torch.bmm(v[..., :d], V)

    def h0(q, c):  # initial inverse Hessian: exact curvature c * lam + l2 on the top directions, gamma elsewhere
        out = q * gamma.unsqueeze(-1)
        if V is not None:
            inv = (1 / (c.unsqueeze(-1) * lam.unsqueeze(1) + l2.unsqueeze(-1))).float()
            out[..., :d] += torch.bmm(down(q) * (inv - gamma.unsqueeze(-1)), V.transpose(1, 2))
        return out

    Z = logits(Xs, theta)
    gs = smooth_grad(theta, Z)
    g = pseudo(theta, gs)  # the pseudo-gradient under L1
    S, Y, rho = [], [], []  # correction pairs: [L, K, d+1], [L, K, d+1], [L, K]
    curv = (torch.sigmoid(Z) * torch.sigmoid(-Z)).mean(-1)  # [L, K] mean logistic curvature
    gamma = (1 / (curv * (lam[:, :1] if V is not None else 1) + l2)).float()
    n_iter = torch.zeros(L, K, dtype=torch.int64, device=dev)
    done = torch.zeros(L, K, dtype=torch.bool, device=dev)
    for it in range(max_iter):
        ok_now = g.abs().amax(-1) <= tol
        done |= ok_now
        live = ~done.all(-1)  # [L'] layers with a column still running
        if 4 * int((~live).sum()) >= len(rows):  # retire the finished layers
            out_theta[rows[~live]], out_iter[rows[~live]], out_ok[rows[~live]] = (
                theta[~live],
                n_iter[~live],
                ok_now[~live],
            )
            if not bool(live.any()):
                return out_theta, out_iter, out_ok
            rows = rows[live]
            Xs, l2, l1, theta, Z, g, gs, curv, gamma, n_iter, done = (
                t[live] for t in (Xs, l2, l1, theta, Z, g, gs, curv, gamma, n_iter, done)
            )
            keep = None if keep is None else keep[live]
            tol = tol[live] if torch.is_tensor(tol) and tol.dim() else tol
            V, lam = (None, None) if V is None else (V[live], lam[live])
            S, Y, rho = [t[live] for t in S], [t[live] for t in Y], [t[live] for t in rho]
        if callback is not None:
            callback(it, theta, g, rows=rows)
        active = ~done
        n_iter += active
        q, alphas = g.clone(), []  # two-loop recursion
        for s, yv, r in zip(reversed(S), reversed(Y), reversed(rho), strict=True):
            a = r * (s * q).sum(-1)
            q -= a.unsqueeze(-1) * yv
            alphas.append(a)
        q = h0(q, curv)
        for s, yv, r, a in zip(S, Y, rho, reversed(alphas), strict=True):
            q += s * (a - r * (yv * q).sum(-1)).unsqueeze(-1)
        moving = active.unsqueeze(-1) if keep is None else active.unsqueeze(-1) * keep  # [L, K, 1 or d+1]
        p = -q * moving
        slope, orthant = torch.zeros_like(l2), None
        if sparse:  # zero units leave zero downhill only; the orthant of this step; slope of the L1 term in it
            p[..., :d] = torch.where((p[..., :d] * g[..., :d] < 0) | (theta[..., :d] != 0), p[..., :d], 0)
            uphill = (p * g).sum(-1) >= 0  # not a descent direction in the orthant: steepest descent instead
            if bool((uphill & active).any()):
                p = torch.where(uphill.unsqueeze(-1), -g * moving, p)
            orthant = torch.where(theta[..., :d] != 0, torch.sign(theta[..., :d]), -torch.sign(g[..., :d]))
            slope = l1 * (orthant.double() * p[..., :d].double()).sum(-1)
        Zp = logits(Xs, p)  # [L, K, n]: X p plus the intercept step
        pw, w = p[..., :d].double(), theta[..., :d].double()
        t = _line_search(Z, Zp, yb, (w * pw).sum(-1), pw.pow(2).sum(-1), l2, slope, active)
        new, Z_new = theta + t.float().unsqueeze(-1) * p, Z + t.unsqueeze(-1) * Zp
        if sparse:
            new, Z_new, t = _project(Xs, new, Z_new, theta, Z, p, t, g, orthant, objective)
        done |= active & (t == 0)  # no decrease left at float precision
        gs_new = smooth_grad(new, Z_new)
        g_new = pseudo(new, gs_new)
        s, yv = new - theta, gs_new - gs
        sy = (s.double() * yv.double()).sum(-1)
        ok = (sy > 1e-12) & (t > 0)
        sy_perp, yy_perp = sy, (yv.double() * yv.double()).sum(-1)  # gamma from the pair's parts off the top
        if V is not None:
            sV, yV = down(s).double(), down(yv).double()
            sy_perp, yy_perp = sy_perp - (sV * yV).sum(-1), yy_perp - (yV * yV).sum(-1)
        gamma = torch.where(ok & (sy_perp > 0), (sy_perp / yy_perp.clamp(min=1e-30)).float(), gamma)
        curv = (torch.sigmoid(Z_new) * torch.sigmoid(-Z_new)).mean(-1)
        S.append(s * ok.unsqueeze(-1))
        Y.append(yv * ok.unsqueeze(-1))
        rho.append(torch.where(ok, 1 / sy.clamp(min=1e-30), torch.zeros_like(sy)).float())
        if len(S) > memory:
            del S[0], Y[0], rho[0]
        theta, Z, g, gs = new, Z_new, g_new, gs_new
    out_theta[rows], out_iter[rows], out_ok[rows] = theta, n_iter, g.abs().amax(-1) <= tol
    return out_theta, out_iter, out_ok


def _hessian_dtype(device) -> torch.dtype:
    """bfloat16 where matrix units make it several times faster than float32 (only the Newton matrix uses it)."""
    if torch.device(device).type == "cuda":
        return torch.bfloat16
    try:
        return torch.bfloat16 if torch.cpu._is_amx_tile_supported() else torch.float32
    except AttributeError:
        return torch.float32


def _cholesky(H, damping):
    """Cholesky factor of H + damping * mean(diag H) * I for the PSD batch H [B, m, m] (damping [B]).

    The ridge grows until the factorization succeeds.
    """
    eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device)
    ridge = damping * H.diagonal(dim1=-2, dim2=-1).mean(-1).clamp(min=1e-12)  # [B]
    for _ in range(6):
        factor, info = torch.linalg.cholesky_ex(H + ridge.view(-1, 1, 1) * eye)
        if not bool((info > 0).any()):
            return factor
        ridge = torch.where(info > 0, 100 * ridge, ridge)
    raise FloatingPointError("the Newton matrix of the L1 probe stayed singular")


def _newton_l1(Xg, yb, lam, theta, valid, max_iter, tol):
    """Orthant-wise Newton on a working set: Xg [L, n, M], theta [L, 1, M+1], valid [L, 1, M].

    The Newton matrix X_F^T diag(D) X_F of the free units F (non-zero, or leaving zero) is
    computed in bfloat16 where that is fast (it only shapes the direction: the gradient, the
    line search and the convergence test stay in float32 / float64). Returns theta and the
    number of iterations [L, 1].
    """
    L, n, M = Xg.shape
    dev = Xg.device
    X1 = torch.cat([Xg, torch.ones(L, n, 1, device=dev)], -1).to(_hessian_dtype(dev))  # [L, n, M+1], intercept last
    Z = logits(Xg, theta)  # [L, 1, n]
    n_iter = torch.zeros(L, 1, dtype=torch.int64, device=dev)
    stalled = torch.zeros(L, 1, dtype=torch.bool, device=dev)
    zero = torch.zeros_like(lam)
    damping = torch.full((L,), DAMP0, device=dev)  # Levenberg-Marquardt: shortens steps the model overshoots

    def objective(th, Z):
        return (F.softplus(Z) - yb * Z).mean(-1) + lam * th[..., :-1].double().abs().sum(-1)

    for _ in range(max_iter):
        pg = pseudo_gradient(theta, gradient(Xg, yb, theta, Z, zero), lam)
        pg[..., :M] *= valid
        active = (pg.abs().amax(-1) > tol) & ~stalled  # [L, 1]
        if not bool(active.any()):
            break
        n_iter += active
        w = theta[..., :M]
        f = torch.cat([valid & ((w != 0) | (pg[..., :M] != 0)), valid.new_ones(L, 1, 1)], -1)[:, 0].float()
        D = (torch.sigmoid(Z) * torch.sigmoid(-Z) / n)[:, 0].float()  # [L, n] Hessian weights
        H = torch.bmm(X1.transpose(1, 2), X1 * D.unsqueeze(-1).to(X1.dtype)).float()  # [L, M+1, M+1]
        H = H * f.unsqueeze(-1) * f.unsqueeze(-2) + torch.diag_embed(1 - f)
        p = -torch.cholesky_solve(pg[:, 0].unsqueeze(-1), _cholesky(H, damping))[..., 0]
        p = (p * f).unsqueeze(1) * active.unsqueeze(-1)  # [L, 1, M+1]
        p[..., :M] = torch.where((w != 0) | (p[..., :M] * pg[..., :M] < 0), p[..., :M], 0)  # zeros leave downhill
        orthant = torch.where(w != 0, torch.sign(w), -torch.sign(pg[..., :M]))
        Zp = logits(Xg, p)
        slope = lam * (orthant.double() * p[..., :M].double()).sum(-1)
        t = _line_search(Z, Zp, yb, zero, zero, zero, slope, active)
        tl = t[:, 0]
        damping = torch.where(tl < 0.25, damping * 8, torch.where(tl > 0.75, damping / 8, damping)).clamp(1e-7, 1e3)
        new, Z_new = theta + t.float().unsqueeze(-1) * p, Z + t.unsqueeze(-1) * Zp
        new, Z_new, t = _project(Xg, new, Z_new, theta, Z, p, t, pg, orthant, objective)
        stalled |= active & (t == 0)  # no decrease left at float precision
        theta, Z = new, Z_new
    return theta, Z, n_iter


def _sparse_logits(Xs, v):
    """X v for weights v [L, K, d] with few non-zeros (no intercept): [L, K, n] float64.

    Gathers only the columns of ``Xs`` [L, n, d] that some column of ``v`` uses (a dense pass when
    there are many).
    """
    L, n, d = Xs.shape
    used = (v != 0).any(1)  # [L, d]
    m = int(used.sum(-1).max())
    if m > d // 8:
        return torch.bmm(v, Xs.transpose(1, 2)).double()
    idx = torch.sort(used.float(), dim=-1, descending=True, stable=True).indices[:, :m]  # [L, m]
    cols = torch.gather(Xs, 2, idx.unsqueeze(1).expand(L, n, m))  # [L, n, m]
    return torch.bmm(torch.gather(v, 2, idx.unsqueeze(1).expand(-1, v.shape[1], -1)), cols.transpose(1, 2)).double()


def _project(Xs, new, Z_new, theta, Z, p, t, pg, orthant, objective, halvings: int = 10):
    """Orthant-wise step: zero the units that left the orthant; exact logits and Armijo backtracking then.

    ``Z_new`` holds the logits ``Z + t Zp`` of the unprojected step: the projected ones subtract
    the contribution of the zeroed units only (a gather of few columns, not a pass over ``Xs``).
    """
    w = new[..., :-1]
    crossed = (torch.sign(w) != orthant) & (w != 0)
    if not bool(crossed.any()):
        return new, Z_new, t
    Zp = (Z_new - Z) / torch.where(t > 0, t, torch.ones_like(t)).unsqueeze(-1)  # X p (+ intercept step)
    f0 = objective(theta, Z)
    pending = crossed.any(-1)  # columns whose path bent
    for _ in range(halvings):
        line = theta + t.float().unsqueeze(-1) * p
        lw = line[..., :-1]
        drop = (torch.sign(lw) != orthant) & (lw != 0)  # [L, K, d] units the projection zeroes
        cand = line.clone()
        cand[..., :-1] = torch.where(drop, 0, lw)
        Zc = Z + t.unsqueeze(-1) * Zp - _sparse_logits(Xs, torch.where(drop, lw, 0))
        ok = objective(cand, Zc) <= f0 + 1e-4 * (pg.double() * (cand - theta).double()).sum(-1)
        take = pending & ok
        new = torch.where(take.unsqueeze(-1), cand, new)
        Z_new = torch.where(take.unsqueeze(-1), Zc, Z_new)
        pending &= ~ok
        if not bool(pending.any()):
            return new, Z_new, t
        t = torch.where(pending, 0.5 * t, t)
    t = torch.where(pending, torch.zeros_like(t), t)
    return torch.where(pending.unsqueeze(-1), theta, new), torch.where(pending.unsqueeze(-1), Z, Z_new), t


DAMP0 = 1e-6  # initial Levenberg-Marquardt damping, relative to the mean diagonal of the Newton matrix
NEWTON_MAX = 128  # largest working set solved by Newton; OWL-QN above
WS_RANK = 64  # rank of the OWL-QN preconditioner on working sets (one subspace iteration)
GROW = 0.5  # a round may add GROW x the non-zero units (at least min_add)
INNER = 0.5  # a round solves its working set to INNER x the violation left outside it (at least tol)


def solve_l1(Xs, y, l1, max_iter=300, tol=1e-4, max_rounds=30, min_add=32):
    """L1 problems by working sets, the columns of ``l1`` [L, K] in order (give C ascending).

    A round adds to the working set, per layer, the units that violate optimality most (as many
    as are already non-zero, at least ``min_add``), solves there to a precision matched to the
    violation left outside, and the loop ends when a full gradient pass finds no violation above
    ``tol``. ``max_iter`` caps the iterations of each round's solver.

    Returns:
        As :func:`solve`; ``n_iter`` counts the working-set solver's iterations over all rounds.
    """
    L, n, d = Xs.shape
    K, dev = l1.shape[1], Xs.device
    l1 = l1.to(dev, torch.float64)
    yb = y.to(dev, torch.float64).view(1, 1, n)
    out = initial_theta(y.to(dev), L, K, d)
    n_iter = torch.zeros(L, K, dtype=torch.int64, device=dev)
    converged = torch.zeros(L, K, dtype=torch.bool, device=dev)
    theta = out[:, :1].clone()  # [L, 1, d+1], warm start along the path
    Z = logits(Xs, theta)  # [L, 1, n]
    for k in range(K):
        lam = l1[:, k : k + 1]  # [L, 1]
        for r in range(max_rounds + 1):
            pg = pseudo_gradient(theta, gradient(Xs, yb, theta, Z, torch.zeros_like(lam)), lam)
            violation = pg.abs().amax(-1)  # [L, 1]
            if bool((violation <= tol).all()) or r == max_rounds:
                break
            nonzero = theta[..., :d] != 0  # [L, 1, d]
            add = torch.clamp((nonzero.sum(-1, keepdim=True) * GROW).long(), min=min_add)
            score = torch.where(nonzero, 0.0, pg[..., :d].abs())
            top = score.argsort(-1, descending=True).argsort(-1)  # rank of each unit's violation
            grow = (top < add) & (score > 0) & (violation > tol).unsqueeze(-1)
            allowed = (nonzero | grow)[:, 0]  # [L, d]
            outside = torch.where(allowed.unsqueeze(1), 0.0, pg[..., :d].abs()).amax(-1)  # [L, 1]
            M = int(allowed.sum(-1).max())
            idx = torch.sort(allowed.float(), dim=-1, descending=True, stable=True).indices[:, :M]  # [L, M]
            valid = torch.gather(allowed, 1, idx).unsqueeze(1)  # [L, 1, M]: False on padding
            Xg = torch.gather(Xs, 2, idx.unsqueeze(1).expand(L, n, M))  # [L, n, M]
            th = torch.cat([torch.gather(theta[..., :d], 2, idx.unsqueeze(1)) * valid, theta[..., d:]], -1)
            inner_tol = torch.clamp(INNER * outside, min=tol)
            if M <= NEWTON_MAX:
                th, Z, it = _newton_l1(Xg, yb, lam, th, valid, max_iter, inner_tol)
            else:  # Newton matrices would cost n M^2: quasi-Newton instead
                th, it, _ = solve(
                    Xg,
                    y,
                    torch.zeros_like(lam),
                    max_iter,
                    inner_tol,
                    rank=WS_RANK,
                    l1=lam,
                    theta0=th,
                    mask=valid,
                    power=1,
                )
                Z = logits(Xg, th)
            n_iter[:, k : k + 1] += it
            theta = torch.zeros_like(theta)
            theta[..., :d].scatter_(2, idx.unsqueeze(1), th[..., :M] * valid)
            theta[..., d] = th[..., M]
        out[:, k : k + 1], converged[:, k : k + 1] = theta, violation <= tol
    return out, n_iter, converged
