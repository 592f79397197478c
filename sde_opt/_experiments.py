"""Small experiment helpers shared by the notebooks, ``paper_figs/`` and the demo.

They compose the public pieces (problems, dynamics, :func:`sde_opt.simulate`,
:func:`sde_opt.solve_diffrax`, :func:`sde_opt.ou_stationary_covariance`) into the few
measurements the narrative keeps repeating: GD against its gradient flow, moments over
paths with standard errors, a stationary covariance with standard errors over paths, the
covariance of real mini-batch gradients, and the stationary-covariance sweep over the
learning rate. Every estimate comes with a standard error; paths are the independent
replicates, so standard errors are always taken over paths.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._checks import positive_int, square_matrix
from ._dynamics import GD, SGD, SGDSDE, NoisyGD
from ._edge_of_stability import gradient_flow_path
from ._engine import Ensemble, simulate
from ._io import register_result
from ._noise import ConstantNoise, MinibatchNoise
from ._problem import Problem
from ._theory import ou_stationary_covariance


# --------------------------------------------------------------------------- problems
def quadratic_finite_sum(hessian, noise_cov, *, key, n_examples: int = 32, minimum=None) -> Problem:
    """A finite sum of shifted quadratics whose mini-batch noise is known exactly.

    ``fᵢ(θ) = ½ (θ − cᵢ)ᵀ H (θ − cᵢ)``, so ``L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*) + const`` with
    ``θ* = mean(cᵢ)``, and every per-example gradient is ``H(θ − cᵢ)``: the noise
    ``D = H C H`` (``C`` the empirical covariance of the centres) does not depend on ``θ``.
    The centres are drawn with ``key`` and then whitened and coloured so that ``D`` equals
    ``noise_cov`` exactly (to rounding). Linear dynamics with additive noise: real SGD has
    exactly the discrete Lyapunov stationary covariance, at every stable ``lr``.

    ``info`` holds ``minima``, ``hessians_min`` and ``noise_cov``.

    Examples:
        >>> import jax.numpy as jnp, jax.random as jr, sde_opt as so
        >>> from sde_opt._experiments import quadratic_finite_sum
        >>> h = jnp.diag(jnp.array([1.0, 4.0]))
        >>> p = quadratic_finite_sum(h, h, key=jr.key(0))
        >>> bool(jnp.allclose(so.MinibatchNoise().covariance(p, jnp.zeros(2)), h, atol=1e-4))
        True
    """
    h = np.asarray(square_matrix("hessian", hessian), dtype=np.float64)
    d = h.shape[0]
    dcov = np.asarray(square_matrix("noise_cov", noise_cov, dim=d, psd=True), dtype=np.float64)
    n = positive_int("n_examples", n_examples)
    if n <= d:
        raise ValueError(f"n_examples={n} must exceed d={d} to realise a full-rank noise_cov; use n_examples > {d}.")
    lam = np.linalg.eigvalsh(h)
    if lam.min() <= 0:
        raise ValueError(f"hessian must be positive definite, its smallest eigenvalue is {lam.min():.3g}.")
    m = np.zeros(d) if minimum is None else np.asarray(minimum, dtype=np.float64)
    if m.shape != (d,):
        raise ValueError(f"minimum must have shape ({d},), got {m.shape}.")
    hinv = np.linalg.inv(h)
    c_target = hinv @ dcov @ hinv  # D = H C H
    z = np.asarray(jr.normal(key, (n, d)), dtype=np.float64)
    z = z - z.mean(axis=0)
    lz = np.linalg.cholesky(z.T @ z / n)
    z = z @ np.linalg.inv(lz).T  # empirical covariance exactly I
    lam_c, vec_c = np.linalg.eigh(0.5 * (c_target + c_target.T))
    root = vec_c * np.sqrt(np.clip(lam_c, 0.0, None))
    centres = m + z @ root.T
    hj = jnp.asarray(h, dtype=jnp.result_type(float))

    def loss(theta, ex):
        e = theta - ex["c"]
        return 0.5 * e @ (hj @ e)

    info = {
        "dim": d,
        "minima": jnp.asarray(m[None], dtype=hj.dtype),
        "hessians_min": hj[None],
        "noise_cov": jnp.asarray(dcov, dtype=hj.dtype),
    }
    return Problem(loss, {"c": jnp.asarray(centres, dtype=hj.dtype)}, info=info, name="quadratic_finite_sum")


# --------------------------------------------------------------------------- GD vs flow
class GDAgainstFlow(eqx.Module):
    """GD at several learning rates against the gradient flow (:func:`gd_against_flow`).

    Attributes:
        lrs: ``(n,)`` the learning rates.
        ts, xs, flow_at: one entry per run ``i``: the times ``t = k · lr`` ``(K_i + 1,)``,
            the GD iterates ``(K_i + 1, d)`` and the flow at those times ``(K_i + 1, d)``.
        flow_t, flow_x: the flow on the union of the time grids.
    """

    lrs: np.ndarray
    ts: tuple[np.ndarray, ...]
    xs: tuple[np.ndarray, ...]
    flow_at: tuple[np.ndarray, ...]
    flow_t: np.ndarray
    flow_x: np.ndarray

    def error(self, i: int) -> np.ndarray:
        """``‖x_GD(t) − x_flow(t)‖`` along run ``i``."""
        return np.linalg.norm(self.xs[i] - self.flow_at[i], axis=-1)


def gd_against_flow(problem: Problem, y0, lrs, t1: float) -> GDAgainstFlow:
    """Gradient descent at each learning rate in ``lrs`` against the gradient flow, on the
    common SDE time axis ``t = k · lr``, up to time ``t1``.

    The flow is solved once by :func:`sde_opt.stability.gradient_flow_path` (diffrax Tsit5,
    adaptive, rtol 1e-6) on the union of the GD time grids, so ``flow_at[i]`` is the flow
    exactly at the times of GD run ``i``.
    """
    y0 = jnp.asarray(y0, dtype=jnp.result_type(float))
    lrs = [float(lr) for lr in lrs]
    ts, xs, grids = [], [], []
    for lr in lrs:
        n_steps = int(round(t1 / lr))
        ens = simulate(GD(problem, lr), y0, key=jr.key(0), n_paths=1, n_steps=n_steps)
        ts.append(np.asarray(ens.ts, dtype=np.float64))
        xs.append(np.asarray(ens.ys[0]))
        grids.append(np.round(np.arange(n_steps + 1) * lr, 12))
    union = np.unique(np.concatenate(grids))
    flow = np.asarray(gradient_flow_path(problem, y0, union).params)
    return GDAgainstFlow(lrs=np.asarray(lrs), ts=tuple(ts), xs=tuple(xs),
                         flow_at=tuple(flow[np.searchsorted(union, grid)] for grid in grids), flow_t=union, flow_x=flow)


# --------------------------------------------------------------------------- moments
class Moments(eqx.Module):
    """Per-coordinate moments over paths at every saved time, each ``(S, d)``, with
    standard errors (``var_se`` from the fourth central moment: ``√((m₄ − s⁴)/n)``)."""

    ts: np.ndarray
    mean: np.ndarray
    mean_se: np.ndarray
    var: np.ndarray
    var_se: np.ndarray
    n_paths: int


def path_moments(ens: Ensemble) -> Moments:
    """Mean and variance over paths with standard errors; diverged paths raise (see
    :meth:`Ensemble.mean`)."""
    ens.mean()  # raises on diverged paths
    ys = np.asarray(ens.ys, dtype=np.float64)
    n = ys.shape[0]
    mean = ys.mean(axis=0)
    c = ys - mean
    var = (c**2).sum(axis=0) / (n - 1)
    m4 = (c**4).mean(axis=0)
    var_se = np.sqrt(np.clip(m4 - var**2, 0.0, None) / n)
    return Moments(ts=np.asarray(ens.ts), mean=mean, mean_se=np.sqrt(var / n), var=var, var_se=var_se, n_paths=n)


class CovarianceEstimate(eqx.Module):
    """A covariance matrix with elementwise standard errors and its trace with its own."""

    cov: np.ndarray
    cov_se: np.ndarray
    trace: float
    trace_se: float
    n: int


def _cov_with_se(samples, centre=None) -> CovarianceEstimate:
    """Covariance of i.i.d. rows ``(n, d)`` (or of per-replicate matrices ``(n, d, d)``)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2:
        c = x - (x.mean(axis=0) if centre is None else centre)
        x = c[:, :, None] * c[:, None, :]
    n = x.shape[0]
    tr = np.trace(x, axis1=1, axis2=2)
    return CovarianceEstimate(cov=x.mean(axis=0), cov_se=x.std(axis=0, ddof=1) / np.sqrt(n), trace=float(tr.mean()),
                              trace_se=float(tr.std(ddof=1) / np.sqrt(n)), n=n)


def stationary_covariance(ens: Ensemble, *, burn_in: float, centre=None) -> CovarianceEstimate:
    """Stationary covariance from an ensemble: for each path the time average of
    ``(θ_t − m)(θ_t − m)ᵀ`` over saved times ``t >= burn_in`` (SDE time), then the mean
    over paths, with standard errors over paths (the paths are independent, the times
    within a path are not). ``m`` is ``centre`` (e.g. the known minimum) or the grand mean.
    """
    ts = np.asarray(ens.ts)
    keep = ts >= burn_in
    if keep.sum() < 2:
        raise ValueError(f"burn_in={burn_in} leaves {keep.sum()} saved times; use a longer run or a smaller burn_in.")
    ens.mean()  # raises on diverged paths
    ys = np.asarray(ens.ys, dtype=np.float64)[:, keep]
    m = ys.reshape(-1, ys.shape[-1]).mean(axis=0) if centre is None else np.asarray(centre, dtype=np.float64)
    c = ys - m
    per_path = np.einsum("nti,ntj->nij", c, c) / c.shape[1]
    return _cov_with_se(per_path)


def batch_gradient_covariance(
    problem: Problem, theta, batch_size: int, *, key, n_draws: int, replacement: bool = True
) -> CovarianceEstimate:
    """Brute-force covariance of real mini-batch gradients at ``theta``: ``n_draws`` batches
    drawn exactly as :class:`sde_opt.SGD` draws them (one SGD step at ``lr = 1`` from
    ``theta`` moves by ``−g_B``). Compare with ``MinibatchNoise().covariance / B`` (times
    ``(N − B)/(N − 1)`` without replacement)."""
    theta = jnp.asarray(theta)
    sgd = SGD(problem, 1.0, batch_size, replacement=replacement)
    keys = jr.split(key, positive_int("n_draws", n_draws))
    g = jax.jit(jax.vmap(lambda k: theta - sgd.step(theta, 0.0, 1.0, k)))(keys)
    return _cov_with_se(g)


# --------------------------------------------------------------------------- the sweep
@dataclasses.dataclass(frozen=True)
class StationarySweepConfig:
    """Set-up of the stationary-covariance sweep (see :func:`stationary_covariance_sweep`)."""

    eigenvalues: tuple = (1.0, 4.0)  # of H; D = H (the Fisher ≈ Hessian regime)
    angle: float = 0.5  # rotation of H's eigenbasis (radians)
    n_examples: int = 32
    batch_size: int = 4
    lrs: tuple = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.45)
    n_paths: int = 1000
    n_steps: int = 2000  # discrete steps per lr (SDE time n_steps·lr)
    save_every: int = 5
    sde_dt: float = 0.0025  # fine step of the SDE (dt ≪ lr); Euler–Maruyama bias dt·λ/2 ≤ 0.5%
    sde_time: float = 15.0  # SDE horizon
    sde_save_every: int = 20
    burn_in: float = 5.0  # SDE time discarded (≥ 5 relaxation times 1/λ_min from the minimum)

    def problem(self, key) -> Problem:
        lam = np.asarray(self.eigenvalues, dtype=np.float64)
        if lam.shape != (2,):
            raise ValueError("eigenvalues must hold the two eigenvalues of the 2-D Hessian.")
        c, s = np.cos(self.angle), np.sin(self.angle)
        v = np.array([[c, -s], [s, c]])
        h = v @ np.diag(lam) @ v.T
        return quadratic_finite_sum(h, h, key=key, n_examples=self.n_examples, minimum=np.array([1.0, -0.5]))


class MethodCovariance(eqx.Module):
    """One method's stationary covariance at every ``lr`` of a sweep: ``diag`` ``(n_lr, d)``,
    the diagonal ``Σ̃ᵢᵢ`` in the eigenbasis of ``H`` with its standard error over paths
    ``se``, and the full matrices ``cov`` ``(n_lr, d, d)`` in the original basis."""

    diag: np.ndarray
    se: np.ndarray
    cov: np.ndarray


class StationarySweep(eqx.Module):
    """A :func:`stationary_covariance_sweep`: real SGD, noisy GD and the SDE at a fine step
    against both Lyapunov solutions, for every ``lr``.

    Attributes:
        lrs: ``(n_lr,)``; eigenvalues: ``(d,)`` of ``H``, ascending (the column order);
        hessian, noise_cov: ``(d, d)``; batch_size: ``B``.
        sgd, noisy_gd, sde: :class:`MethodCovariance` of each method.
        lyap_cont, lyap_disc: ``(n_lr, d)`` diagonals of the continuous and discrete
            Lyapunov solutions in the eigenbasis of ``H``.
        fine_lrs, fine_lyap_cont, fine_lyap_disc: both solutions on a fine ``lr`` grid.
        config: the :class:`StationarySweepConfig`.
    """

    lrs: np.ndarray
    eigenvalues: np.ndarray
    hessian: np.ndarray
    noise_cov: np.ndarray
    batch_size: int
    sgd: MethodCovariance
    noisy_gd: MethodCovariance
    sde: MethodCovariance
    lyap_cont: np.ndarray
    lyap_disc: np.ndarray
    fine_lrs: np.ndarray
    fine_lyap_cont: np.ndarray
    fine_lyap_disc: np.ndarray
    config: StationarySweepConfig = eqx.field(static=True)

    METHODS = ("sgd", "noisy_gd", "sde")

    def table(self) -> str:
        """Plain-text table: ``Σ̃ᵢᵢ/lr`` of each method and both Lyapunov solutions."""
        lines = []
        for i, lam in enumerate(self.eigenvalues):
            lines.append(f"eigendirection λ={lam:g}: Σ̃/lr (± s.e.)")
            lines.append(f"{'lr':>6} {'lr·λ':>5} {'SGD':>16} {'noisy GD':>16} {'SDE (fine dt)':>16} {'Lyap cont':>9} "
                         f"{'Lyap disc':>9}")
            for j, lr in enumerate(self.lrs):
                cells = [f"{getattr(self, m).diag[j, i] / lr:8.4f}±{getattr(self, m).se[j, i] / lr:.4f}"
                         for m in self.METHODS]
                lines.append(f"{lr:6g} {lr * lam:5.2f} " + " ".join(f"{c:>16}" for c in cells)
                             + f" {self.lyap_cont[j, i] / lr:9.4f} {self.lyap_disc[j, i] / lr:9.4f}")
        return "\n".join(lines)


def stationary_covariance_sweep(config: StationarySweepConfig, *, key, verbose: bool = False) -> StationarySweep:
    """Stationary covariance of real SGD, noisy GD and the SDE (at the fine step
    ``config.sde_dt``) on :func:`quadratic_finite_sum` with ``D = H``, for every ``lr`` in
    ``config.lrs``, against the continuous and the discrete Lyapunov solutions
    (:func:`sde_opt.ou_stationary_covariance`). All paths start at the minimum.

    ``D`` is measured once with :class:`sde_opt.MinibatchNoise` at the minimum; on this
    problem it is the same at every ``θ``, so noisy GD and the SDE use it as a
    :class:`sde_opt.ConstantNoise` (two normals per step instead of ``N``).

    Everything is reported in the eigenbasis of ``H`` (column ``i`` ↔ eigenvalue
    ``config.eigenvalues`` sorted ascending), as the diagonal ``Σ̃ᵢᵢ`` and its standard error
    over paths (see :class:`StationarySweep`).
    """
    k_prob, k_run = jr.split(key)
    prob = config.problem(k_prob)
    h = np.asarray(prob.info["hessians_min"][0], dtype=np.float64)
    dcov = np.asarray(MinibatchNoise().covariance(prob, prob.info["minima"][0]), dtype=np.float64)
    noise = ConstantNoise(dcov)
    minimum = prob.info["minima"][0]
    lam, vec = np.linalg.eigh(h)
    b = config.batch_size
    methods = ("sgd", "noisy_gd", "sde")
    res = {f"{m}_{s}": [] for m in methods for s in ("diag", "se", "cov")}
    res["lyap_cont"], res["lyap_disc"] = [], []
    sde_steps = int(round(config.sde_time / config.sde_dt))
    for j, lr in enumerate(config.lrs):
        discrete = dict(n_steps=config.n_steps, save_every=config.save_every)
        fine_sde = dict(n_steps=sde_steps, dt=config.sde_dt, save_every=config.sde_save_every)
        runs = {  # name: (dynamics, simulate arguments, horizon in SDE time)
            "sgd": (SGD(prob, lr, b), discrete, config.n_steps * lr),
            "noisy_gd": (NoisyGD(prob, lr, b, noise), discrete, config.n_steps * lr),
            "sde": (SGDSDE(prob, lr, b, noise), fine_sde, config.sde_time),
        }
        for i, (name, (dyn, kw, horizon)) in enumerate(runs.items()):
            burn = min(config.burn_in, 0.3 * horizon)
            ens = simulate(dyn, minimum, key=jr.fold_in(k_run, 3 * j + i), n_paths=config.n_paths, **kw)
            est = stationary_covariance(ens, burn_in=burn, centre=minimum)
            res[f"{name}_diag"].append(np.einsum("ki,kl,li->i", vec, est.cov, vec))
            res[f"{name}_se"].append(_eig_se(ens, burn, minimum, vec))
            res[f"{name}_cov"].append(est.cov)
        res["lyap_cont"].append(_lyapunov_diag(h, dcov, lr, b, vec, discrete=False))
        res["lyap_disc"].append(_lyapunov_diag(h, dcov, lr, b, vec, discrete=True))
        if verbose:
            print(f"  lr={lr:<6g} " + "  ".join(f"{m}={res[f'{m}_diag'][-1].round(5)}" for m in methods), flush=True)
    # both Lyapunov solutions on a fine lr grid, for the curves of the figure
    lr_max = min(max(config.lrs) * 1.05, 1.99 / lam.max())
    fine = np.geomspace(min(config.lrs) * 0.9, lr_max, 120)
    per = {m: MethodCovariance(diag=np.asarray(res[f"{m}_diag"]), se=np.asarray(res[f"{m}_se"]),
                               cov=np.asarray(res[f"{m}_cov"])) for m in methods}
    return StationarySweep(
        lrs=np.asarray(config.lrs, dtype=np.float64), eigenvalues=lam, hessian=h, noise_cov=dcov, batch_size=int(b),
        **per, lyap_cont=np.asarray(res["lyap_cont"]), lyap_disc=np.asarray(res["lyap_disc"]), fine_lrs=fine,
        fine_lyap_cont=np.array([_lyapunov_diag(h, dcov, lr, b, vec, discrete=False) for lr in fine]),
        fine_lyap_disc=np.array([_lyapunov_diag(h, dcov, lr, b, vec, discrete=True) for lr in fine]),
        config=config,
    )


def _lyapunov_diag(h, dcov, lr, batch_size, vec, *, discrete: bool) -> np.ndarray:
    s = np.asarray(ou_stationary_covariance(h, dcov, float(lr), batch_size, discrete=discrete), dtype=np.float64)
    return np.einsum("ki,kl,li->i", vec, s, vec)


def _eig_se(ens: Ensemble, burn_in: float, centre, vec) -> np.ndarray:
    """Standard errors over paths of the time-averaged ``Σ̃ᵢᵢ`` (eigenbasis of H)."""
    ts = np.asarray(ens.ts)
    ys = np.asarray(ens.ys, dtype=np.float64)[:, ts >= burn_in] - np.asarray(centre, dtype=np.float64)
    proj = (ys @ vec) ** 2  # (n, t, d)
    per_path = proj.mean(axis=1)
    return per_path.std(axis=0, ddof=1) / np.sqrt(per_path.shape[0])


def plot_stationary_covariance(sweep: StationarySweep, axes=None):
    """Plot a :class:`StationarySweep`: one panel per eigendirection of ``H``; the stationary
    variance along it divided by the SDE's prediction (continuous Lyapunov), against ``lr``,
    for SGD, noisy GD and the SDE at a fine step (error bars: 2 s.e. over paths), over both
    Lyapunov curves. Returns the axes (a new figure if ``axes`` is ``None``)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    lrs, lam, fine = sweep.lrs, sweep.eigenvalues, sweep.fine_lrs
    b = float(sweep.batch_size)
    style = {"sgd": ("SGD, real mini-batches", "o", "C0", -1),
             "noisy_gd": ("noisy GD, Gaussian noise", "s", "C1", 0),
             "sde": ("SDE, fine step dt", "^", "C2", 1)}
    if axes is None:
        _, axes = plt.subplots(1, len(lam), figsize=(5.0 * len(lam), 4.0), constrained_layout=True)
    axes = np.atleast_1d(axes)
    dx = 0.006 * (lrs.max() - 0)
    for i, ax in enumerate(axes):
        ref = sweep.lyap_cont[:, i]
        ax.plot(fine, sweep.fine_lyap_cont[:, i] / sweep.fine_lyap_cont[:, i], "k--", lw=1.2,
                label="continuous Lyapunov (SDE theory)")
        ax.plot(fine, sweep.fine_lyap_disc[:, i] / sweep.fine_lyap_cont[:, i], "k-", lw=1.2,
                label="discrete Lyapunov (SGD theory)")
        for m, (label, marker, color, shift) in style.items():
            est = getattr(sweep, m)
            ax.errorbar(lrs + shift * dx, est.diag[:, i] / ref, yerr=2 * est.se[:, i] / ref,
                        fmt=marker, color=color, ms=5, capsize=2.5, lw=1, label=label)
        if 2.0 / lam[i] <= 1.1 * fine.max():
            ax.axvline(2.0 / lam[i], color="0.5", ls=":", lw=1)
            ax.text(2.0 / lam[i], 0.5, "lr = 2/λ: unstable beyond ", rotation=90, ha="right", va="center",
                    fontsize=8, color="0.4", transform=ax.get_xaxis_transform())
        if np.max(sweep.lyap_disc[:, i] / ref) > 3:  # log scale only when the range needs it
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0, 1.08 * fine.max())
        ax.set_xlabel("learning rate lr")
        ax.set_ylabel("stationary variance / SDE prediction")
        kind = "flat" if i == 0 else ("sharp" if i == len(lam) - 1 else "middle")
        ax.set_title(f"{kind} eigendirection, curvature λ = {lam[i]:g}", fontsize=10)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].figure.suptitle(f"Stationary covariance near a minimum (D = H, B = {b:g}); SDE prediction = lr/(2B); "
                            "error bars 2 s.e. over paths", fontsize=9.5)
    return axes


register_result(GDAgainstFlow)
register_result(Moments)
register_result(CovarianceEstimate)
register_result(MethodCovariance)
register_result(StationarySweep)
register_result(StationarySweepConfig)
