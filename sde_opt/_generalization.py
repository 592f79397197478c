"""The large-batch generalization gap on digits, and escape from a large-batch minimum with
injected noise of equal trace (issue 13, parts 2 and 3 on a network).

:func:`large_batch_gap` trains an ensemble of tanh MLPs or small CNNs (``model="cnn"``;
paths of the engine = seeds: each path has its own initial weights and its own batches) on a
train/test split of scikit-learn's bundled digits under several *arms*:

* ``small_batch``: real SGD, batch ``b`` with replacement, rate ``lr``;
* ``large_batch``: SGD with batch ``B`` (``B = N``, the default, is full-batch GD), rate ``lr``;
* ``linear_rule``: the large batch at ``min(lr·B/b, lr_cap)`` (Goyal et al. 2017);
* ``isotropic``, ``diagonal``, ``fisher``, ``minibatch``, ``hessian``: the large batch at
  rate ``lr`` plus a draw of that noise shape (:func:`sde_opt.inject_noise` before
  ``optax.sgd(lr)``), Zhu et al. (2019)'s experiment.

**The temperature.** Small-batch SGD's gradient has covariance ``D(θ)/b`` (with
replacement); a large batch without replacement has ``D(θ)(N−B)/(B(N−1))`` (zero for
``B = N``). The injected noise supplies the difference,
``τ = 1/b − (N−B)/(B(N−1))``, so the ``minibatch`` arm's gradient has *exactly* small-batch
SGD's covariance at every ``θ``. Each other shape ``S`` is rescaled by a constant ``c_S``
so that ``Tr(c_S·S) = Tr D`` *at the reference points*: the ``large_batch`` arm's final
points (one per seed; the traces are averaged over them, ``c_S = mean Tr D / mean Tr S``),
i.e. at the minima whose sharpness the noise is meant to change
(:func:`equal_trace_injections`). The constant shapes (``isotropic``: ``D`` replaced by
``(Tr D/d)·I``; ``diagonal``: the mean diagonal of ``D``) keep that strength along the whole
run, while ``D(θ)`` itself is much larger early in training; the state-dependent shapes
(``fisher``, ``minibatch``, ``hessian``) change with ``θ`` as SGD's noise does.
``result.trace_at_init`` records how far apart the arms are at the start.

:func:`network_escape` starts from one of those large-batch minima and counts the paths,
under each injected shape at equal trace (there) and under real small-batch SGD, whose
training loss rises above the minimum's by ``loss_rise`` within the horizon (Wilson
intervals).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Float

from ._checks import nonnegative, positive, positive_int
from ._curvature import hessian_eigs, hessian_trace
from ._alignment import alignment
from ._dynamics import SGD, OptaxDynamics
from ._engine import observe
from ._exit import first_exit
from ._fit import proportion_interval
from ._inject import inject_noise
from ._io import register_result
from ._noise import DiagonalNoise, EmpiricalFisherNoise, HessianNoise, IsotropicNoise, MinibatchNoise, ScaledNoise
from ._observers import SavePositions
from ._problem import Problem
from .problems import _mlp_init, digits, mlp_apply

ARMS = ("small_batch", "large_batch", "linear_rule", "isotropic", "diagonal", "fisher", "minibatch", "hessian")
SHAPES = ("isotropic", "diagonal", "fisher", "minibatch", "hessian")
METRICS = ("test_acc", "test_loss", "train_loss", "train_acc", "lambda_max", "trace_h", "alignment")


# ------------------------------------------------------------------------------ intervals
def t_interval(values, confidence=0.95):
    """Mean and the Student-t interval ``mean ± t_{(1+c)/2, n−1} · s/√n`` of the finite
    ``values`` (non-finite ones are left out and counted): ``(mean, low, high, n)``.
    With one value the interval is ``(nan, nan)``; with none everything is nan.

    Example:
        >>> from sde_opt.experiments import t_interval
        >>> m, lo, hi, n = t_interval([1.0, 2.0, 3.0, float("nan")])
        >>> round(m, 3), round(hi - m, 3), n
        (2.0, 2.484, 3)
    """
    from scipy import stats

    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    n = v.size
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if n == 1:
        return m, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def correlation_interval(x, y, confidence=0.95):
    """Pearson ``r`` of the finite pairs with its Fisher-z interval, and Spearman's ``ρ``:
    ``(r, low, high, rho, n)``."""
    from scipy import stats

    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    if n < 4:
        return math.nan, math.nan, math.nan, math.nan, n
    r = float(np.corrcoef(x, y)[0, 1])
    z, half = np.arctanh(np.clip(r, -0.999999, 0.999999)), stats.norm.ppf(0.5 + confidence / 2) / math.sqrt(n - 3)
    rho = float(stats.spearmanr(x, y).statistic)
    return r, float(np.tanh(z - half)), float(np.tanh(z + half)), rho, n


# ------------------------------------------------------------------------------ the task
def _cnn_init(key, channels: int):
    kc, kd = jr.split(key)
    return {"conv": jr.normal(kc, (3, 3, 1, channels)) / 3.0, "conv_b": jnp.zeros(channels),
            "w": jr.normal(kd, (16 * channels, 10)) * np.sqrt(1.0 / (16 * channels)), "b": jnp.zeros(10)}


def cnn_apply(params, x):
    """The small CNN of :func:`digits_split` (``model="cnn"``): the 8×8 image through a 3×3
    convolution (``C`` channels, same padding), tanh, 2×2 average pooling and a dense layer to
    10 logits; ``x`` ``(64,)`` or ``(n, 64)``."""
    single = x.ndim == 1
    img = x.reshape(-1, 8, 8, 1).astype(params["conv"].dtype)
    h = jax.lax.conv_general_dilated(img, params["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jnp.tanh(h + params["conv_b"])
    h = h.reshape(h.shape[0], 4, 2, 4, 2, h.shape[-1]).mean(axis=(2, 4)).reshape(h.shape[0], -1)
    out = h @ params["w"] + params["b"]
    return out[0] if single else out


_MODELS = {"mlp": mlp_apply, "cnn": cnn_apply}


def digits_split(*, key, n_train: int = 512, hidden: int = 32, label_noise=0.0, model: str = "mlp",
                 channels: int = 8):
    """A train/test split of scikit-learn's bundled digits (1,797 images, no download) for a
    tanh MLP ``64 → hidden → 10`` (``model="mlp"``) or a small CNN (``model="cnn"``: 3×3
    convolution with ``channels`` channels, tanh, 2×2 average pooling, dense to 10;
    :func:`cnn_apply`) with cross-entropy: ``(train, test)`` problems (the test problem
    holds the other ``1797 − n_train`` images). ``label_noise``: the fraction of *training*
    labels replaced by a different, uniformly drawn class (a harder task; the test labels
    stay clean). ``train.theta0`` is one initialisation; the study draws one per seed with
    :func:`model_inits`."""
    if model not in _MODELS:
        raise ValueError(f"model must be 'mlp' or 'cnn', got {model!r}.")
    k_perm, k_init, k_flip, k_new = jr.split(key, 4)
    x, y = digits(key=k_perm)
    n_train = positive_int("n_train", n_train, upper=len(y) - 1, upper_name="1796 (the digits less one test image)")
    hidden = positive_int("hidden", hidden)
    channels = positive_int("channels", channels)
    eta = float(nonnegative("label_noise", label_noise))
    if eta >= 1:
        raise ValueError(f"label_noise must be in [0, 1), got {label_noise}.")
    ytr = y[:n_train]
    flip = jr.uniform(k_flip, (n_train,)) < eta
    other = (ytr + jr.randint(k_new, (n_train,), 1, 10)) % 10
    ytr = jnp.where(flip, other, ytr).astype(y.dtype)
    apply = _MODELS[model]

    def loss(p, ex):
        return -jax.nn.log_softmax(apply(p, ex["x"]))[ex["y"]]

    size = {"hidden": hidden} if model == "mlp" else {"channels": channels}
    params = _init(model, k_init, x.shape[1], size)
    info = {"label_noise": eta, "n_flipped": int(jnp.sum(flip)), "model": model, **size}
    train = Problem(loss, {"x": x[:n_train], "y": ytr}, params=params, name=f"digits_train_{model}", info=info)
    test = Problem(loss, {"x": x[n_train:], "y": y[n_train:]}, params=params, name=f"digits_test_{model}",
                   info={"model": model, **size})
    return train, test


def _init(model: str, key, n_in: int, size: dict):
    return _mlp_init(key, [n_in, size["hidden"], 10]) if model == "mlp" else _cnn_init(key, size["channels"])


def model_inits(problem: Problem, *, key, n_seeds: int):
    """``(n_seeds, d)`` flat initialisations of the model of :func:`digits_split` (seed ``s``
    from ``fold_in(key, s)``)."""
    info = problem.info
    size = {k: info[k] for k in ("hidden", "channels") if k in info}
    flat = [jax.flatten_util.ravel_pytree(_init(info["model"], jr.fold_in(key, s), problem.data["x"].shape[1], size))[0]
            for s in range(n_seeds)]
    return jnp.stack(flat).astype(problem.theta0.dtype)


def _accuracy(problem: Problem, theta):
    out = _MODELS[problem.info["model"]](problem.unravel(theta), problem.data["x"])
    return jnp.mean(jnp.argmax(out, axis=-1) == problem.data["y"])


def batch_noise_factor(n: int, batch_size: int, replacement: bool) -> float:
    """The factor ``c`` of ``Var(g_B) = c·D``: ``1/B`` with replacement, ``(N−B)/(B(N−1))`` without."""
    if replacement:
        return 1.0 / batch_size
    return (n - batch_size) / (batch_size * (n - 1)) if n > 1 else 0.0


# ------------------------------------------------------------------------------ equal trace
def _traces(problem: Problem, points, *, key, n_probes):
    """Mean over ``points`` of ``Tr D``, ``Tr F`` (empirical Fisher), ``Tr H`` and ``diag D``."""
    tr_d, tr_f, tr_h, diag = [], [], [], []
    for s, theta in enumerate(points):
        g = problem.per_example_grads(theta)
        gc = g - jnp.mean(g, axis=0)
        tr_d.append(jnp.mean(jnp.sum(gc**2, axis=1)))
        tr_f.append(jnp.mean(jnp.sum(g**2, axis=1)))
        diag.append(jnp.mean(gc**2, axis=0))
        if n_probes is None:
            tr_h.append(jnp.trace(HessianNoise().covariance(problem, theta)))
        else:
            tr_h.append(hessian_trace(problem, theta, key=jr.fold_in(key, s), n_probes=n_probes).value)
    mean = lambda v: float(jnp.mean(jnp.stack(v)))  # noqa: E731
    return mean(tr_d), mean(tr_f), mean(tr_h), jnp.mean(jnp.stack(diag), axis=0)


def equal_trace_injections(problem: Problem, points, *, key=None, n_probes: int | None = 16,
                           hessian_steps: int = 8) -> dict:
    """The injected noise shapes, each scaled so that its trace equals ``Tr D`` (the
    mini-batch covariance, ``B = 1``) on average over the reference ``points``
    (``(n, d)`` or ``(d,)``): ``{"isotropic", "diagonal", "fisher", "minibatch", "hessian"}``
    → noise models (multiply by the temperature for the injected covariance).

    ``isotropic``: ``(mean Tr D / d)·I``; ``diagonal``: the mean of ``diag D``; ``fisher``,
    ``hessian``: ``EmpiricalFisherNoise``, ``HessianNoise`` times ``mean Tr D / mean Tr S``;
    ``minibatch``: ``D(θ)`` itself. ``Tr H`` is Hutchinson's with ``n_probes`` probes
    (``None``: exact, from the dense Hessian's PSD part; small problems), so the Hessian
    shape's trace matches to that estimate. The Hessian shape is drawn by Lanczos
    (``HessianNoise(method="lanczos", n_steps=hessian_steps)``, network scale).

    **Caveat (Hessian shape).** Hutchinson estimates the *signed* ``Tr H``, while the draws have
    covariance ``H₊`` (of a sub-sample's Hessian, when the study sub-samples): where ``H`` is
    indefinite (``reference="init"``) the injected trace is larger than ``Tr D`` by about
    ``Tr H₋/Tr H``, and the study's ``trace_at_ref`` (computed from the same estimate) does not
    show it. At the minima ``H`` is close to PSD and the two agree.
    """
    pts = jnp.atleast_2d(jnp.asarray(points))
    if n_probes is not None and key is None:
        raise ValueError("equal_trace_injections with n_probes needs key=...; or n_probes=None (exact).")
    tr_d, tr_f, tr_h, diag = _traces(problem, pts, key=key, n_probes=n_probes)
    if not (tr_d > 0 and tr_f > 0 and tr_h > 0):
        raise ValueError(f"a reference trace is not positive (Tr D={tr_d:g}, Tr F={tr_f:g}, Tr H={tr_h:g}); "
                         "the points must be where the mini-batch noise and the curvature are not zero.")
    d = pts.shape[1]
    return {
        "isotropic": IsotropicNoise(tr_d / d),
        "diagonal": DiagonalNoise(diag * (tr_d / float(jnp.sum(diag)))),
        "fisher": ScaledNoise(EmpiricalFisherNoise(), tr_d / tr_f),
        "minibatch": MinibatchNoise(),
        "hessian": HessianNoise(tr_d / tr_h, method="lanczos", n_steps=hessian_steps),
    }


# ------------------------------------------------------------------------------ the study
class LargeBatchGap(eqx.Module):
    """The large-batch study: one row per arm, one column per seed.

    Attributes:
        arms: the rows (see :data:`ARMS`).
        test_acc, test_loss, train_loss, train_acc: ``(n_arms, n_seeds)`` at the final point.
        lambda_max: ``(n_arms, n_seeds)`` the top Hessian eigenvalue (Lanczos) of the
            training loss at the final point; ``trace_h``: its trace (Hutchinson).
        alignment: ``(n_arms, n_seeds)`` ``d·Tr(HD)/(Tr H·Tr D)`` at the final point
            (1 for isotropic noise, larger when ``D`` lies along ``H``).
        diverged: ``(n_arms, n_seeds)`` 1 where the run ended non-finite; those seeds are left
            out of every mean and counted in :meth:`summary`.
        lrs: ``(n_arms,)`` the rate of each arm; batch: ``(n_arms,)`` its batch size.
        trace_at_init: ``(n_arms,)`` the trace of the arm's gradient-noise covariance (mini-batch
            plus injected) at the seeds' initial points, mean over seeds.
        trace_at_ref: ``(n_arms,)`` the same at the reference points (the large-batch minima or
            the initial points, ``reference``), mean over them: equal for the small-batch and
            the injected arms by construction (the Hessian shape's to Hutchinson's error).
        final: ``(n_arms, n_seeds, d)`` the final parameters.
        temperature: ``τ = 1/b − (N−B)/(B(N−1))``.
    """

    arms: tuple = eqx.field(static=True)
    test_acc: Float[np.ndarray, "a s"]
    test_loss: Float[np.ndarray, "a s"]
    train_loss: Float[np.ndarray, "a s"]
    train_acc: Float[np.ndarray, "a s"]
    lambda_max: Float[np.ndarray, "a s"]
    trace_h: Float[np.ndarray, "a s"]
    alignment: Float[np.ndarray, "a s"]
    diverged: Float[np.ndarray, "a s"]
    lrs: Float[np.ndarray, " a"]
    batch: Float[np.ndarray, " a"]
    trace_at_init: Float[np.ndarray, " a"]
    trace_at_ref: Float[np.ndarray, " a"]
    final: Float[np.ndarray, "a s d"]
    temperature: float = eqx.field(static=True)
    n_steps: int = eqx.field(static=True)
    n_train: int = eqx.field(static=True)
    n_test: int = eqx.field(static=True)
    label_noise: float = eqx.field(static=True)
    confidence: float = eqx.field(static=True, default=0.95)
    reference: str = eqx.field(static=True, default="large-batch minima")
    model: str = eqx.field(static=True, default="mlp")

    @property
    def n_seeds(self) -> int:
        return int(np.shape(self.test_acc)[1])

    def _masked(self, metric: str):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
        v = np.array(getattr(self, metric), np.float64)
        v[np.asarray(self.diverged) > 0] = np.nan
        return v

    def summary(self, metric: str):
        """``{arm: (mean, low, high, n_finite)}`` of ``metric`` over the seeds (Student-t
        interval at ``confidence``; diverged seeds left out and counted by ``n``)."""
        v = self._masked(metric)
        return {a: t_interval(v[i], self.confidence) for i, a in enumerate(self.arms)}

    def difference(self, metric: str, baseline: str = "large_batch"):
        """``{arm: (mean, low, high, n)}`` of the paired difference ``arm − baseline`` of
        ``metric`` seed by seed (the arms share their initialisations; a seed counts when
        neither run diverged)."""
        v = self._masked(metric)
        base = v[self.arms.index(baseline)]
        return {a: t_interval(v[i] - base, self.confidence) for i, a in enumerate(self.arms)}

    def sharpness_vs_accuracy(self):
        """Pearson ``r`` (Fisher-z interval) and Spearman ``ρ`` of ``λmax`` against test
        accuracy over every finite (arm, seed): ``(r, low, high, rho, n)``."""
        return correlation_interval(self._masked("lambda_max"), self._masked("test_acc"), self.confidence)

    def table(self) -> str:
        cols = [("test_acc", "test acc", 100.0, ".1f"), ("test_loss", "test loss", 1.0, ".3f"),
                ("train_loss", "train loss", 1.0, ".3f"), ("lambda_max", "λmax", 1.0, ".3g"),
                ("trace_h", "Tr H", 1.0, ".3g"), ("alignment", "D-H align", 1.0, ".3g")]
        sums = {c: self.summary(c) for c, *_ in cols}
        paired = "large_batch" in self.arms
        diff = self.difference("test_acc") if paired else {}
        head = f"{'arm':>12} {'lr':>6} {'B':>5} {'ok':>5} " + " ".join(f"{h:>21}" for _, h, _, _ in cols)
        head += f" {'Δacc vs large (paired)':>23}" if paired else ""
        rows = [head]
        for i, a in enumerate(self.arms):
            cells = []
            for c, _, s, f in cols:
                m, lo, hi, n = sums[c][a]
                cells.append(f"{format(s * m, f):>8} [{format(s * lo, f)}, {format(s * hi, f)}]".rjust(21))
            n_ok = self.n_seeds - int(np.sum(np.asarray(self.diverged)[i] > 0))
            if paired:
                m, lo, hi, _ = diff[a]
                cells.append(f"{100 * m:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]".rjust(23))
            rows.append(f"{a:>12} {self.lrs[i]:>6.3g} {int(self.batch[i]):>5} {n_ok:>2}/{self.n_seeds:<2} "
                        + " ".join(cells))
        rows.append(f"({self.model}; mean [{self.confidence:.0%} t-interval] over seeds; test acc in %; N_train={self.n_train}, "
                    f"N_test={self.n_test}, label noise {self.label_noise:g}, {self.n_steps} steps, τ={self.temperature:.4g}, "
                    f"equal trace at the {self.reference})")
        r, lo, hi, rho, n = self.sharpness_vs_accuracy()
        if n:
            rows.append(f"λmax vs test accuracy over all runs: Pearson r = {r:.3f} [{lo:.3f}, {hi:.3f}], "
                        f"Spearman ρ = {rho:.3f}, n = {n}")
        else:
            rows.append("λmax, Tr H and the alignment were not measured (curvature=False).")
        rows.append(f"gradient-noise trace at init / at the {self.reference}: " + ", ".join(
            f"{a} {self.trace_at_init[i]:.3g}/{self.trace_at_ref[i]:.3g}" for i, a in enumerate(self.arms)))
        return "\n".join(rows)


def _arm_optimizer(arm, lr, noises, temperature, train, seed, hessian_subsample):
    if arm not in SHAPES:
        return optax.sgd(lr)
    sub = hessian_subsample if arm == "hessian" else None
    return optax.chain(inject_noise(train, noises[arm], temperature=temperature, seed=seed, subsample=sub),
                       optax.sgd(lr))


def _run_arm(train, arm, y0, *, lr, batch_size, replacement, noises, temperature, key, n_steps, seed,
             hessian_subsample):
    n_seeds = y0.shape[0]
    if arm in SHAPES:
        tx = _arm_optimizer(arm, lr, noises, temperature, train, seed, hessian_subsample)
        dyn = OptaxDynamics(train, tx, batch_size, replacement=replacement, lr=lr)
    else:
        dyn = SGD(train, lr, batch_size, replacement=replacement)
    out = observe(dyn, y0, SavePositions(every=n_steps), key=key, n_paths=n_seeds, n_steps=n_steps)
    return out["ys"][:, -1], np.asarray(out["diverged"])


def _noise_trace(train, arm, theta, noises, *, temperature, small_factor, large_factor, key):
    """Trace of the gradient-noise covariance of ``arm`` at ``theta`` (mini-batch + injected)."""
    g = train.per_example_grads(theta)
    tr_d = jnp.mean(jnp.sum((g - jnp.mean(g, axis=0)) ** 2, axis=1))
    if arm == "small_batch":
        return small_factor * tr_d
    base = large_factor * tr_d
    if arm not in SHAPES:
        return base
    n = noises[arm]
    if arm == "isotropic":
        extra = n.variance * theta.shape[0]
    elif arm == "diagonal":
        extra = jnp.sum(n.variances)
    elif arm == "fisher":
        extra = n.scale * jnp.mean(jnp.sum(g**2, axis=1))
    elif arm == "minibatch":
        extra = tr_d
    else:
        extra = n.scale * hessian_trace(train, theta, key=key, n_probes=16).value
    return base + temperature * extra


def large_batch_gap(*, key, arms=ARMS, n_seeds: int = 16, n_train: int = 512, hidden: int = 32, label_noise=0.0,
                    model: str = "mlp", channels: int = 8,
                    lr=0.1, small_batch: int = 16, large_batch: int | None = None, lr_cap=None,
                    n_steps: int = 2000, hessian_subsample: int | None = 128, hessian_steps: int = 8,
                    n_probes: int = 16, curvature: bool = True, reference: str = "minima",
                    confidence=0.95) -> LargeBatchGap:
    """Small-batch SGD against large-batch SGD, the linear rule and large-batch SGD plus
    injected noise of equal trace, on a digits MLP, ``n_seeds`` seeds per arm run as one
    ensemble on the engine (see the module docstring for the arms and the temperature).

    Every arm runs ``n_steps`` steps from the same ``n_seeds`` initialisations
    (:func:`model_inits`); seed ``s`` of arm ``i`` draws its batches (and its injected
    noise) from ``fold_in(fold_in(k_run, i), s)``, ``k_run = split(key, 4)[2]``; the
    initialisations are ``model_inits(train, key=split(key, 4)[1])``.

    Args:
        key: PRNG key (data split and label noise, initialisations, runs, curvature probes).
        arms: a subset of :data:`ARMS` (``"large_batch"`` is run first whenever an injected
            arm is asked for: its final points are the reference points).
        n_seeds: paths of each ensemble.
        n_train, hidden, label_noise, model, channels: the task and the network (:func:`digits_split`:
            the MLP, or ``model="cnn"``, the small CNN).
        lr: the rate of every arm but ``linear_rule``.
        small_batch: ``b`` (with replacement).
        large_batch: ``B`` (without replacement; ``None``: ``N``, i.e. full-batch GD).
        lr_cap: the linear rule's rate is ``min(lr·B/b, lr_cap)`` (``None``: no cap).
        n_steps: steps of every arm (the same SDE time ``n_steps·lr`` for all but the linear rule).
        hessian_subsample: the Hessian shape is drawn on this many examples drawn afresh each
            step (``None``: all), ``hessian_steps`` Lanczos steps per draw.
        n_probes: Hutchinson probes of ``Tr H`` (reference traces, ``trace_h``, alignment).
        reference: where the shapes are given equal trace: ``"minima"`` (the large-batch arm's
            final points, the default) or ``"init"`` (the seeds' initial points, where SGD's
            noise is largest; the constant shapes then keep that strength to the end).
        curvature: measure ``λmax``, ``Tr H`` and the alignment at every final point (``False``:
            those rows are nan and the table says they were not measured).
        confidence: of the intervals.
    """
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {arms!r}.")
    arms = tuple(arms)
    n_seeds = positive_int("n_seeds", n_seeds)
    n_steps = positive_int("n_steps", n_steps)
    lr = float(positive("lr", lr))
    k_data, k_init, k_run, k_curv = jr.split(key, 4)
    train, test = digits_split(key=k_data, n_train=n_train, hidden=hidden, label_noise=label_noise, model=model,
                               channels=channels)
    n = train.n_examples
    b = positive_int("small_batch", small_batch, upper=n, upper_name="n_train")
    big = n if large_batch is None else positive_int("large_batch", large_batch, upper=n, upper_name="n_train")
    lr_lin = lr * big / b if lr_cap is None else min(lr * big / b, float(positive("lr_cap", lr_cap)))
    small_factor = batch_noise_factor(n, b, True)
    large_factor = batch_noise_factor(n, big, False)
    tau = small_factor - large_factor
    if tau <= 0:
        raise ValueError(f"small_batch={b} must be noisier than large_batch={big}; the temperature would be {tau:g}.")
    y0 = model_inits(train, key=k_init, n_seeds=n_seeds)
    if reference not in ("minima", "init"):
        raise ValueError(f"reference must be 'minima' (the large-batch minima) or 'init', got {reference!r}.")

    order = list(arms)
    if any(a in SHAPES for a in arms) and "large_batch" not in arms and reference == "minima":
        order = ["large_batch", *order]
    finals, diverged, noises = {}, {}, None
    for arm in sorted(order, key=lambda a: (a != "large_batch", ARMS.index(a))):
        i = ARMS.index(arm)
        if arm in SHAPES and noises is None:
            if reference == "init":
                ref = y0
            else:
                ok = diverged["large_batch"] == 0
                if not ok.any():
                    raise ValueError("every large-batch seed diverged: there is no reference point; lower lr.")
                ref = finals["large_batch"][ok]
            noises = equal_trace_injections(train, ref, key=jr.fold_in(k_curv, 1), n_probes=n_probes,
                                            hessian_steps=hessian_steps)
        finals[arm], diverged[arm] = _run_arm(
            train, arm, y0, lr=lr_lin if arm == "linear_rule" else lr,
            batch_size=b if arm == "small_batch" else big, replacement=arm == "small_batch", noises=noises,
            temperature=tau, key=jr.fold_in(k_run, i), n_steps=n_steps, seed=i, hessian_subsample=hessian_subsample)

    if noises is None:
        ref = finals["large_batch"][diverged["large_batch"] == 0] if "large_batch" in finals else None
    metrics = {m: np.full((len(arms), n_seeds), np.nan) for m in METRICS}
    tr_init, tr_ref = np.zeros(len(arms)), np.zeros(len(arms))
    test_loss = jax.jit(jax.vmap(test.loss))
    train_loss = jax.jit(jax.vmap(train.loss))
    acc = eqx.filter_jit(jax.vmap(_accuracy, (None, 0)))  # the problem's info names its model (static)
    for r, arm in enumerate(arms):
        th = finals[arm]
        ok = diverged[arm] == 0
        metrics["test_loss"][r] = np.asarray(test_loss(th))
        metrics["train_loss"][r] = np.asarray(train_loss(th))
        metrics["test_acc"][r] = np.asarray(acc(test, th))
        metrics["train_acc"][r] = np.asarray(acc(train, th))
        for s in np.flatnonzero(ok) if curvature else ():
            ks = jr.fold_in(jr.fold_in(k_curv, 100 + r), s)
            k1, k2, k3 = jr.split(ks, 3)
            metrics["lambda_max"][r, s] = float(hessian_eigs(train, th[s], 1, key=k1)[0][0])
            metrics["trace_h"][r, s] = float(hessian_trace(train, th[s], key=k2, n_probes=n_probes).value)
            metrics["alignment"][r, s] = float(alignment(train, th[s], key=k3, k=3, n_probes=n_probes).ratio_vs_isotropic)
        kw = dict(temperature=tau, small_factor=small_factor, large_factor=large_factor)
        if arm not in SHAPES or noises is not None:
            tr_init[r] = np.mean([float(_noise_trace(train, arm, y0[s], noises, key=jr.fold_in(k_curv, s), **kw))
                                  for s in range(n_seeds)])
            if ref is not None:
                tr_ref[r] = np.mean([float(_noise_trace(train, arm, t, noises, key=jr.fold_in(k_curv, s), **kw))
                                     for s, t in enumerate(ref)])
    div = np.stack([diverged[a] for a in arms]).astype(np.float64)
    lrs = np.array([lr_lin if a == "linear_rule" else lr for a in arms])
    batch = np.array([b if a == "small_batch" else big for a in arms], np.float64)
    return LargeBatchGap(arms=arms, diverged=div, lrs=lrs, batch=batch, trace_at_init=tr_init, trace_at_ref=tr_ref,
                         final=np.stack([np.asarray(finals[a]) for a in arms]), temperature=float(tau), n_steps=n_steps,
                         n_train=n, n_test=test.n_examples, label_noise=float(label_noise), confidence=float(confidence),
                         reference="large-batch minima" if reference == "minima" else "initial points",
                         model=model, **metrics)


# ------------------------------------------------------------------------------ escape
ESCAPE_KINDS = ("gd", "small_batch", *SHAPES)


class NetworkEscape(eqx.Module):
    """Escape from a large-batch minimum of the digits MLP, one row per kind (``"gd"``:
    full-batch GD, no noise; ``"small_batch"``: real SGD with batch ``b``; the others:
    GD plus injected noise of that shape, trace ``τ·Tr D`` at the minimum).

    Attributes:
        kinds: the rows.
        n_left, n_paths: how many paths' training loss rose above ``loss_min + loss_rise``
            within the horizon.
        fraction, low, high: ``n_left/n_paths`` and its Wilson interval.
        mean_time: mean of ``min(T, horizon)`` in steps (a lower bound on the mean exit step).
        loss_min: the training loss at the minimum; loss_rise, horizon (steps), temperature.
    """

    kinds: tuple = eqx.field(static=True)
    n_left: Float[np.ndarray, " k"]
    n_paths: Float[np.ndarray, " k"]
    fraction: Float[np.ndarray, " k"]
    low: Float[np.ndarray, " k"]
    high: Float[np.ndarray, " k"]
    mean_time: Float[np.ndarray, " k"]
    loss_min: float = eqx.field(static=True)
    loss_rise: float = eqx.field(static=True)
    horizon: int = eqx.field(static=True)
    temperature: float = eqx.field(static=True)
    lambda_max: float = eqx.field(static=True)

    def table(self) -> str:
        rows = [f"{'kind':>12} {'left':>9} {'fraction [95% Wilson]':>24} {'mean steps':>10}"]
        for i, k in enumerate(self.kinds):
            rows.append(f"{k:>12} {int(self.n_left[i]):>4}/{int(self.n_paths[i]):<4} {self.fraction[i]:>7.3f} "
                        f"[{self.low[i]:.3f}, {self.high[i]:.3f}] {self.mean_time[i]:>10.4g}")
        rows.append(f"(left: training loss > {self.loss_min:.4g} + {self.loss_rise:g} within {self.horizon} steps; "
                    f"minimum's λmax = {self.lambda_max:.3g}; τ = {self.temperature:.4g})")
        return "\n".join(rows)


def network_escape(train: Problem, minimum, *, key, kinds=ESCAPE_KINDS, lr=0.1, small_batch: int = 16,
                   loss_rise=0.1, n_paths: int = 64, max_steps: int = 500, hessian_subsample: int | None = 128,
                   hessian_steps: int = 8, n_probes: int = 16, confidence=0.95) -> NetworkEscape:
    """How often each injected noise shape (at equal trace ``τ·Tr D`` at ``minimum``,
    ``τ = 1/b``, on top of full-batch GD at rate ``lr``) and real SGD with batch ``b``
    lift the training loss of ``train`` by ``loss_rise`` above its value at ``minimum``
    (e.g. a large-batch minimum, ``LargeBatchGap.final``) within ``max_steps`` steps."""
    unknown = [k for k in kinds if k not in ESCAPE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {ESCAPE_KINDS}, got {kinds!r}.")
    theta = train.check_params(minimum, "minimum")
    n_paths = positive_int("n_paths", n_paths)
    max_steps = positive_int("max_steps", max_steps)
    rise = float(positive("loss_rise", loss_rise))
    b = positive_int("small_batch", small_batch, upper=train.n_examples, upper_name="n_examples")
    tau = batch_noise_factor(train.n_examples, b, True)
    k_ref, k_run, k_eig = jr.split(key, 3)
    noises = equal_trace_injections(train, theta, key=k_ref, n_probes=n_probes, hessian_steps=hessian_steps) \
        if any(k in SHAPES for k in kinds) else None
    loss_min = float(train.loss(theta))
    threshold = loss_min + rise

    def left(th):
        return train.loss(th) > threshold

    rows = {k: [] for k in ("n_left", "n_paths", "fraction", "low", "high", "mean_time")}
    for kind in kinds:
        i = ESCAPE_KINDS.index(kind)
        if kind == "small_batch":
            dyn = SGD(train, lr, b)
        elif kind == "gd":
            dyn = SGD(train, lr, train.n_examples, replacement=False)
        else:
            tx = _arm_optimizer(kind, lr, noises, tau, train, i, hessian_subsample)
            dyn = OptaxDynamics(train, tx, train.n_examples, replacement=False, lr=lr)
        ex = first_exit(dyn, theta, left, key=jr.fold_in(k_run, i), n_paths=n_paths, max_steps=max_steps)
        k = int(jnp.sum(ex.exited))
        lo, hi = proportion_interval(k, n_paths, confidence, method="wilson")
        rows["n_left"].append(k)
        rows["n_paths"].append(n_paths)
        rows["fraction"].append(k / n_paths)
        rows["low"].append(lo)
        rows["high"].append(hi)
        rows["mean_time"].append(float(np.mean(np.asarray(ex.times))) / lr)
    lam = float(hessian_eigs(train, theta, 1, key=k_eig)[0][0])
    return NetworkEscape(kinds=tuple(kinds), loss_min=loss_min, loss_rise=rise, horizon=max_steps, temperature=tau,
                         lambda_max=lam, **{k: np.asarray(v, np.float64) for k, v in rows.items()})


# ------------------------------------------------------------------------------ plots
_ARM_COLORS = {"small_batch": "C3", "large_batch": "C7", "linear_rule": "C5", "isotropic": "C0", "diagonal": "C9",
               "fisher": "C2", "minibatch": "C1", "hessian": "C4", "gd": "C7"}


def plot_large_batch_gap(result: LargeBatchGap, ax=None):
    """Two panels for a :class:`LargeBatchGap`: test accuracy per arm (mean and interval,
    seeds as dots) and ``λmax`` against test accuracy for every run. ``ax``: two axes or
    ``None``; returns them."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(11, 4))
    a0, a1 = ax
    acc = 100 * result._masked("test_acc")
    lam = result._masked("lambda_max")
    summ = result.summary("test_acc")
    for i, arm in enumerate(result.arms):
        m, lo, hi, _ = summ[arm]
        c = _ARM_COLORS.get(arm, "k")
        a0.errorbar(i, 100 * m, yerr=[[100 * (m - lo)], [100 * (hi - m)]], fmt="o", color=c, capsize=4)
        a0.plot(np.full(acc.shape[1], i) + 0.15, acc[i], ".", color=c, alpha=0.4)
        a1.plot(lam[i], acc[i], "o", color=c, alpha=0.6, label=arm)
    a0.set_xticks(range(len(result.arms)), [a.replace("_", " ") for a in result.arms], rotation=30, fontsize=8)
    a0.set_ylabel("test accuracy (%)")
    a0.set_title(f"{result.n_seeds} seeds, mean and {result.confidence:.0%} interval", fontsize=9)
    r, lo, hi, rho, n = result.sharpness_vs_accuracy()
    a1.set_xscale("log")
    a1.set_xlabel("λmax of the training loss at the final point")
    a1.set_ylabel("test accuracy (%)")
    a1.set_title(f"Pearson r = {r:.2f} [{lo:.2f}, {hi:.2f}], Spearman ρ = {rho:.2f}", fontsize=9)
    a1.legend(fontsize=7)
    return ax


def plot_network_escape(result: NetworkEscape, ax=None):
    """Fraction of paths that left the large-batch minimum per kind, with Wilson intervals."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(len(result.kinds))
    f, lo, hi = map(np.asarray, (result.fraction, result.low, result.high))
    ax.bar(x, f, yerr=[np.maximum(f - lo, 0), np.maximum(hi - f, 0)], color=[_ARM_COLORS.get(k, "k") for k in result.kinds], capsize=4)
    ax.set_xticks(x, [k.replace("_", " ") for k in result.kinds], rotation=30, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction that left (loss rise)")
    ax.set_title(f"from a GD minimum (λmax {result.lambda_max:.3g}): loss > min + {result.loss_rise:g} "
                 f"in {result.horizon} steps", fontsize=9)
    return ax


register_result(LargeBatchGap)
register_result(NetworkEscape)
