"""The models of the network benchmarks, in Flax linen and in PyTorch with the same weights.

Two image classifiers, each a Flax linen module and a ``torch.nn.Module`` twin computing the
same function, for the benchmarks that run sde_opt (JAX) and PyHessian / hessian-eigenthings
(torch) on one network in one process:

``cnn``
    ``bench_networks_noise._cnn``'s CNN: 3×3 conv 3→16, ReLU, 3×3 conv 16→32, ReLU, 2×2
    average pool, dense 2048→71, ReLU, dense 71→10 (151,287 parameters on 16×16×3 images).
    Same layout and parameter names (``Conv_0``, ``Conv_1``, ``Dense_0``, ``Dense_1``), so
    its variables also fit ``bench_networks.to_torch``.
``resnet``
    A small ResNet with BatchNorm (He et al. 2016's basic blocks, CIFAR layout): a 3×3 stem
    conv 3→16 with BatchNorm and ReLU, then three stages of basic residual blocks at widths
    16, 64 and 192 with 1, 1 and 2 blocks, at 16², 8² and 4² on 16×16 inputs (each block:
    two 3×3 convs, BatchNorm after each, ReLU after the first and after the sum; the first
    block of stages 2 and 3 has stride 2 and a 1×1-conv + BatchNorm shortcut, the others
    the identity), global average pooling, dense 192→10. Convolutions have no bias
    (BatchNorm follows each). 1,174,682 parameters (``"params"``, 95 % of them in the last
    stage) and 2,400 running statistics (``"batch_stats"``); 22·10⁶ multiply-adds per image.
    The last stage stays at 4×4: XLA's CPU convolutions on 2×2 maps run at a few GFLOP/s
    (measured: a 3×3 conv at 2×2×192 takes 9× longer than at 4×4×192), so a fourth stage
    would make the JAX side, not the network, the bottleneck.

Both take NHWC images and ``train`` (``cnn`` ignores it). BatchNorm uses the mini-batch's
statistics with ``train=True`` (the running statistics are then updated through the mutable
``"batch_stats"`` collection, momentum 0.9, as torch's ``momentum=0.1``) and the running
statistics with ``train=False``; epsilon is 1e-5 in both frameworks.

**Weight mapping.** The torch twin's submodules carry the Flax module names (``stem_conv``,
``stage1_block0.proj_bn``, ``head``, ...), and ``to_torch`` copies leaf by leaf: conv
kernels HWIO → OIHW, dense kernels ``(in, out)`` → ``(out, in)``, BatchNorm ``scale`` /
``bias`` → ``weight`` / ``bias`` and ``batch_stats`` ``mean`` / ``var`` → ``running_mean``
/ ``running_var``. Images go NHWC → NCHW (``images_to_torch``); the CNN's torch forward
permutes back to NHWC before flattening, so the dense kernel sees Flax's (H, W, C) order.
Padding is explicit where Flax's ``"SAME"`` would differ from torch (a stride-2 3×3 conv on
an even size pads ``(0, 1)`` under ``"SAME"``; both use ``(1, 1)`` here). The twin is in
evaluation mode. Every torch parameter and buffer is checked to be set with a matching shape.

The data are scikit-learn's bundled 8×8 digits (``digits_images``: no download), upsampled
bilinearly, standardised, repeated to 3 channels, and augmented by shifts and noise beyond
the 1,797 originals.

Self-check (both models: train a little in JAX, copy into torch, compare the losses and the
full-batch gradients, time one forward and one gradient in each framework)::

    python benchmarks/bench_models.py [--n-examples 2048] [--threads 2]
    python benchmarks/bench_models.py --fast      # tiny sizes, a smoke test

Use from a benchmark::

    from bench_models import digits_images, make_flax, train_flax, per_example_loss, to_torch
    x, y = digits_images(2048)
    net, variables = make_flax("resnet", jr.key(0), x.shape[1:])
    variables, info = train_flax("resnet", net, variables, x, y, steps=100, batch_size=128, lr=0.05, seed=0)
    prob = so.Problem(per_example_loss("resnet", net), {"x": x, "y": y}, params=variables)
    model = to_torch("resnet", variables)   # + images_to_torch(x), torch_criterion()
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

if __name__ == "__main__":  # the self-check: XLA's CPU threads are fixed when jax is imported
    _t = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--threads=")), None)
    if "--threads" in sys.argv[1:-1]:
        _t = sys.argv[sys.argv.index("--threads") + 1]
    _t = int(_t or 2)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_cpu_multi_thread_eigen={'true' if _t > 1 else 'false'} intra_op_parallelism_threads={_t}"
    ).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import linen as nn  # noqa: E402

MODELS = ("cnn", "resnet")
_BN_MOMENTUM, _BN_EPS = 0.9, 1e-5  # Flax's running-average momentum 0.9 is torch's momentum=0.1
_PAD1 = ((1, 1), (1, 1))  # torch's padding=1 (Flax "SAME" pads (0, 1) for stride 2 on even sizes)


# ------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def _digits_upsampled(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    ds = load_digits()
    img = ds.images.astype(np.float32)  # (1797, 8, 8), values 0..16, background 0
    img = np.asarray(jax.image.resize(jnp.asarray(img), (len(img), size, size), "linear"), np.float32)
    return img, ds.target.astype(np.int64)


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``img`` (H, W) moved by (dy, dx) pixels, the uncovered border filled with the background 0."""
    h, w = img.shape
    out = np.zeros_like(img)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0),
                                                                    max(-dx, 0):w - max(dx, 0)]
    return out


def digits_images(n: int, size: int = 16, channels: int = 3, seed: int = 0,
                  *, max_shift: int = 2, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of scikit-learn's bundled handwritten digits and their classes.

    The 1,797 8×8 images are upsampled bilinearly to ``size × size`` (``jax.image.resize``),
    standardised with the mean and standard deviation of all their pixels (so the originals
    have zero mean and unit variance), and repeated to ``channels`` identical channels. The
    first ``min(n, 1797)`` images are the originals in an order drawn from ``seed``; beyond
    1,797 each further image is a random original moved by up to ``max_shift`` pixels in
    each direction (zero background filling the border) plus Gaussian noise of standard
    deviation ``noise`` (in standardised units), all drawn from ``seed``. Labels are the
    originals' digit classes 0–9.

    Returns ``x`` float32 ``(n, size, size, channels)`` (NHWC) and ``y`` int64 ``(n,)``.
    """
    if n < 1 or size < 1 or channels < 1:
        raise ValueError(f"digits_images needs n, size, channels >= 1; got n={n}, size={size}, channels={channels}")
    img, labels = _digits_upsampled(size)
    n0 = len(img)
    rng = np.random.default_rng(seed)
    src = np.concatenate([rng.permutation(n0), rng.integers(0, n0, max(n - n0, 0))])[:n]
    x = img[src].copy()
    if n > n0:
        shifts = rng.integers(-max_shift, max_shift + 1, (n - n0, 2))
        for i, (dy, dx) in enumerate(shifts, start=n0):
            x[i] = _shift(x[i], int(dy), int(dx))
    x = (x - img.mean()) / img.std()
    if n > n0:
        x[n0:] += noise * rng.standard_normal(x[n0:].shape, dtype=np.float32)
    x = np.repeat(x[..., None], channels, axis=-1)
    return np.ascontiguousarray(x, dtype=np.float32), labels[src]


# ------------------------------------------------------------------------------- Flax models
class CNN(nn.Module):
    """``bench_networks_noise._cnn``'s CNN (parameter names ``Conv_0`` … ``Dense_1``)."""

    n_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no BatchNorm or dropout
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Dense(71)(x.reshape(x.shape[:-3] + (-1,))))  # flatten in (H, W, C) order
        return nn.Dense(self.n_classes)(x)


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=name)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is a 1×1 conv
    with BatchNorm where the stride or the width changes, the identity otherwise."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        s = (self.stride, self.stride)
        y = nn.Conv(self.features, (3, 3), s, padding=_PAD1, use_bias=False, name="conv1")(x)
        y = nn.relu(_bn(train, "bn1")(y))
        y = nn.Conv(self.features, (3, 3), padding=_PAD1, use_bias=False, name="conv2")(y)
        y = _bn(train, "bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), s, padding="VALID", use_bias=False, name="proj_conv")(x)
            x = _bn(train, "proj_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """Stem conv (``widths[0]`` channels) + BatchNorm + ReLU, stages of ``BasicBlock`` (stride
    2 entering every stage after the first), global average pooling, dense head."""

    widths: tuple[int, ...] = (16, 64, 192)
    blocks: tuple[int, ...] = (1, 1, 2)
    n_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.widths[0], (3, 3), padding=_PAD1, use_bias=False, name="stem_conv")(x)
        x = nn.relu(_bn(train, "stem_bn")(x))
        for i, (width, n_blocks) in enumerate(zip(self.widths, self.blocks)):
            for j in range(n_blocks):
                x = BasicBlock(width, 2 if i > 0 and j == 0 else 1, name=f"stage{i}_block{j}")(x, train)
        x = jnp.mean(x, axis=(-3, -2))
        return nn.Dense(self.n_classes, name="head")(x)


_FLAX = {"cnn": CNN, "resnet": ResNet}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; use one of {MODELS}")


def make_flax(name: str, key, input_shape: tuple[int, int, int]) -> tuple[nn.Module, dict]:
    """The Flax module ``name`` and its initial variables (Flax's default initialisers, float32)
    for images of ``input_shape = (H, W, C)``: ``{"params": ...}`` for ``cnn``,
    ``{"params": ..., "batch_stats": ...}`` for ``resnet``."""
    _check_name(name)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape is one image's (H, W, C); got {input_shape}")
    module = _FLAX[name]()
    variables = module.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    return module, variables


def _xent(logits, labels):
    """Cross-entropy ``logsumexp(z) - z[y]`` (any leading batch shape)."""
    return jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


def per_example_loss(name: str, module: nn.Module):
    """``loss(variables, example) -> scalar``: the evaluation-mode (running BatchNorm
    statistics) cross-entropy of one ``example = {"x": (H, W, C), "y": ()}``, as
    ``so.Problem(loss, data, params=variables)`` takes it."""
    _check_name(name)

    def loss(variables, example):
        logits = module.apply(variables, example["x"][None], train=False)[0]
        return _xent(logits, example["y"])

    return loss


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(module, variables, x, y):
    logits = module.apply(variables, x, train=False)
    return jnp.sum(_xent(logits, y)), jnp.sum(jnp.argmax(logits, -1) == y)


def evaluate(module: nn.Module, variables: dict, x, y, batch_size: int = 2048) -> tuple[float, float]:
    """Evaluation-mode mean cross-entropy and accuracy on ``(x, y)``, ``batch_size`` at a time."""
    total, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        s, c = _eval_batch(module, variables, jnp.asarray(x[i:i + batch_size]), jnp.asarray(y[i:i + batch_size]))
        total, correct = total + float(s), correct + int(c)
    return total / len(x), correct / len(x)


def train_flax(name: str, module: nn.Module, variables: dict, x, y, steps: int, batch_size: int, lr: float,
               seed: int = 0, *, momentum: float = 0.9) -> tuple[dict, dict]:
    """``steps`` steps of mini-batch SGD (``optax.sgd(lr, momentum)``) in training mode.

    Mini-batches of ``batch_size`` run through epochs of a permutation drawn from ``seed``.
    BatchNorm normalises with each mini-batch's statistics, and the running statistics
    (``"batch_stats"``) are updated at every step. Returns the new variables and
    ``{"loss", "accuracy"}`` of the trained network in evaluation mode on ``(x, y)``, with
    ``"loss0"`` (before training) and ``"seconds"`` (the training loop, compile included).
    """
    _check_name(name)
    n = len(x)
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={batch_size} must be between 1 and the {n} examples")
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}  # "batch_stats" (resnet) or nothing
    opt = optax.sgd(lr, momentum)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def batch_loss(params, state, xb, yb):
        logits, new_state = module.apply({"params": params, **state}, xb, train=True, mutable=list(state))
        return jnp.mean(_xent(logits, yb)), new_state

    @jax.jit
    def step(params, state, opt_state, x, y, idx):
        (loss, state), g = jax.value_and_grad(batch_loss, has_aux=True)(params, state, x[idx], y[idx])
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    loss0, _ = evaluate(module, variables, x, y)
    rng = np.random.default_rng(seed)
    per_epoch = n // batch_size
    t0 = time.perf_counter()
    opt_state = opt.init(params)
    for t in range(steps):
        if t % per_epoch == 0:
            perm = rng.permutation(n)
        idx = perm[(t % per_epoch) * batch_size:(t % per_epoch + 1) * batch_size]
        params, state, opt_state, _ = step(params, state, opt_state, x, y, jnp.asarray(idx))
    variables = {"params": params, **state}
    jax.block_until_ready(variables)
    seconds = time.perf_counter() - t0
    loss, acc = evaluate(module, variables, x, y)
    return variables, {"loss": loss, "accuracy": acc, "loss0": loss0, "seconds": seconds}


# ------------------------------------------------------------------------------- torch twins
def _torch_model(name: str, params: dict):
    """The torch twin of ``name`` (random weights), its sizes read from the Flax ``params``
    (for ``resnet`` also the widths and the number of blocks of each stage)."""
    import torch
    from torch import nn as tnn

    class TorchCNN(tnn.Module):
        def __init__(self):
            super().__init__()
            self.Conv_0 = tnn.Conv2d(params["Conv_0"]["kernel"].shape[2], 16, 3, padding=1)  # Flax "SAME"
            self.Conv_1 = tnn.Conv2d(16, 32, 3, padding=1)
            self.Dense_0 = tnn.Linear(params["Dense_0"]["kernel"].shape[0], 71)
            self.Dense_1 = tnn.Linear(71, params["Dense_1"]["kernel"].shape[1])

        def forward(self, x):
            x = torch.relu(self.Conv_1(torch.relu(self.Conv_0(x))))
            x = tnn.functional.avg_pool2d(x, 2, 2).permute(0, 2, 3, 1).flatten(1)  # Flax's (H, W, C) order
            return self.Dense_1(torch.relu(self.Dense_0(x)))

    def bn(c):
        return tnn.BatchNorm2d(c, eps=_BN_EPS, momentum=1.0 - _BN_MOMENTUM)

    class TorchBlock(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
            self.bn1 = bn(c_out)
            self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
            self.bn2 = bn(c_out)
            self.has_proj = stride != 1 or c_in != c_out
            if self.has_proj:
                self.proj_conv = tnn.Conv2d(c_in, c_out, 1, stride, bias=False)
                self.proj_bn = bn(c_out)

        def forward(self, x):
            y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu((self.proj_bn(self.proj_conv(x)) if self.has_proj else x) + y)

    class TorchResNet(tnn.Module):
        def __init__(self):
            super().__init__()
            c_in, c_out = params["stem_conv"]["kernel"].shape[2:]
            self.stem_conv = tnn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.stem_bn = bn(c_out)
            self.names = sorted((k for k in params if k.startswith("stage")),  # stage{i}_block{j}
                                key=lambda k: tuple(int(t) for t in k[5:].split("_block")))
            for name in self.names:
                c_in, c_out = c_out, params[name]["conv1"]["kernel"].shape[3]
                stride = 2 if name.endswith("_block0") and not name.startswith("stage0_") else 1
                setattr(self, name, TorchBlock(c_in, c_out, stride))
            self.head = tnn.Linear(*params["head"]["kernel"].shape)

        def forward(self, x):
            x = torch.relu(self.stem_bn(self.stem_conv(x)))
            for name in self.names:
                x = getattr(self, name)(x)
            return self.head(x.mean(dim=(2, 3)))

    if name == "cnn":
        return TorchCNN()
    return TorchResNet()


_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def to_torch(name: str, variables: dict):
    """The torch twin of Flax model ``name`` with ``variables`` copied in, in evaluation mode.

    Conv kernels HWIO → OIHW, dense kernels transposed, BatchNorm ``scale``/``bias`` and the
    running ``mean``/``var`` into ``weight``/``bias``/``running_mean``/``running_var``. Any
    pytree of the variables' structure maps the same way (a gradient, for instance).
    Raises if a torch parameter or buffer is left unset or a shape disagrees.
    """
    import torch

    _check_name(name)
    model = _torch_model(name, variables["params"])
    tensors = dict(model.named_parameters()) | {k: b for k, b in model.named_buffers()
                                                  if not k.endswith("num_batches_tracked")}
    unset = set(tensors)
    with torch.no_grad():
        for collection, tree in variables.items():
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
                keys = [p.key for p in path]
                a = np.asarray(leaf, np.float32)
                if keys[-1] == "kernel":
                    a = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T
                target = ".".join(keys[:-1] + [_TORCH_LEAF[collection, keys[-1]]])
                if target not in tensors or tuple(tensors[target].shape) != a.shape:
                    raise ValueError(f"{collection}/{'/'.join(keys)} {a.shape} has no torch twin of that shape "
                                     f"({target}: {tuple(tensors[target].shape) if target in tensors else 'missing'})")
                tensors[target].copy_(torch.from_numpy(np.array(a, np.float32)))  # a C-ordered copy
                unset.discard(target)
    if unset:
        raise ValueError(f"torch tensors not set from the Flax variables: {sorted(unset)}")
    return model.eval()


def images_to_torch(x):
    """NHWC images (numpy or JAX) as a float32 NCHW torch tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def torch_criterion():
    """The mean cross-entropy, the torch counterpart of ``per_example_loss`` averaged."""
    import torch

    return torch.nn.CrossEntropyLoss()


def n_params(tree) -> int:
    return sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------------------- self-check
def _median_time(f, repeats: int) -> float:
    f()  # compile / warm up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def check(name: str, x, y, steps: int, batch_size: int, lr: float, repeats: int) -> dict:
    """Train ``name`` in JAX, copy it into torch, and compare losses, gradients and times."""
    import torch

    import sde_opt as so

    module, variables = make_flax(name, jr.key(0), x.shape[1:])
    variables, info = train_flax(name, module, variables, x, y, steps, batch_size, lr, seed=0)
    d, n_state = n_params(variables["params"]), n_params({k: v for k, v in variables.items() if k != "params"})
    print(f"\n== {name}: d = {d:,} parameters (+{n_state:,} BatchNorm statistics); {steps} SGD steps "
          f"(batch {batch_size}, lr {lr}, momentum 0.9) in {info['seconds']:.1f} s: eval loss {info['loss0']:.4f} "
          f"-> {info['loss']:.4f}, train accuracy {info['accuracy']:.3f}", flush=True)

    model, crit = to_torch(name, variables), torch_criterion()
    xt, yt = images_to_torch(x), torch.from_numpy(np.asarray(y, np.int64))
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def batch_loss(params, state, x, y):
        return jnp.mean(_xent(module.apply({"params": params, **state}, x, train=False), y))

    state = {k: v for k, v in variables.items() if k != "params"}
    forward = jax.jit(lambda v, x: module.apply(v, x, train=False))
    loss_grad = jax.jit(jax.value_and_grad(batch_loss))
    loss_j, g_j = loss_grad(variables["params"], state, xj, yj)
    model.zero_grad(set_to_none=True)
    loss_t = crit(model(xt), yt)
    loss_t.backward()
    loss_t = float(loss_t.detach())
    rel_loss = abs(float(loss_j) - loss_t) / abs(loss_t)

    # the JAX gradient mapped through the same converter, compared tensor by tensor
    g_mapped = dict(to_torch(name, {"params": g_j, **state}).named_parameters())
    pairs = [(g_mapped[k].detach().numpy().ravel(), p.grad.numpy().ravel()) for k, p in model.named_parameters()]
    gj, gt = np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])
    rel_grad = float(np.linalg.norm(gj - gt) / np.linalg.norm(gt))
    worst = max(float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)) for a, b in pairs)
    with torch.no_grad():
        z_t = model(xt).numpy()
    z_j = np.asarray(forward(variables, xj))
    rel_logits = float(np.max(np.abs(z_j - z_t)) / np.max(np.abs(z_t)))
    print(f"eval loss: JAX {float(loss_j):.7f}, torch {loss_t:.7f}, relative difference {rel_loss:.1e}; "
          f"logits: max |z_jax - z_torch| / max |z| = {rel_logits:.1e}")
    print(f"gradient (d = {gt.size:,}): ||g_jax - g_torch|| / ||g_torch|| = {rel_grad:.1e} "
          f"(worst tensor {worst:.1e}), ||g|| = {np.linalg.norm(gt):.4e}")

    prob = so.Problem(per_example_loss(name, module), {"x": xj, "y": yj}, params=variables)
    loss_p = float(jax.jit(prob.loss)(prob.theta0))
    rel_prob = abs(loss_p - float(loss_j)) / abs(float(loss_j))
    print(f"so.Problem: dim = {prob.dim:,} (chunk_size {prob.chunk_size}), loss {loss_p:.7f} "
          f"(relative difference to the batched loss {rel_prob:.1e})")

    def torch_grad():
        model.zero_grad(set_to_none=True)
        crit(model(xt), yt).backward()

    def torch_forward():
        with torch.inference_mode():
            model(xt)

    prob_grad = jax.jit(prob.grad)
    times = {
        "JAX forward": _median_time(lambda: jax.block_until_ready(forward(variables, xj)), repeats),
        "torch forward": _median_time(torch_forward, repeats),
        "JAX gradient": _median_time(lambda: jax.block_until_ready(loss_grad(variables["params"], state, xj, yj)),
                                     repeats),
        "torch gradient": _median_time(torch_grad, repeats),
        "so.Problem.grad": _median_time(lambda: jax.block_until_ready(prob_grad(prob.theta0)), repeats),
    }
    print(f"times for {len(x)} images (median of {repeats}; so.Problem.grad streams {prob.chunk_size} at a time): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in times.items()), flush=True)
    return {"d": d, "rel_loss": rel_loss, "rel_logits": rel_logits, "rel_grad": rel_grad, "rel_prob": rel_prob,
            "times": times, **info}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-examples", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2, help="torch threads and XLA's CPU threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--fast", action="store_true", help="tiny sizes: a smoke test")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.fast:
        args.n_examples, args.repeats = 256, 1
    steps = {"cnn": 100, "resnet": 100} if not args.fast else {"cnn": 5, "resnet": 5}
    lrs = {"cnn": 0.02, "resnet": 0.005}  # both end near a mean loss of 0.1 (a loss near 0 would make
    # the relative loss difference a measure of cancellation in logsumexp(z) - z[y], not of the twins)
    x, y = digits_images(args.n_examples)
    print(f"digits: x {x.shape} {x.dtype} (mean {x.mean():.3f}, std {x.std():.3f}), y {y.shape} {y.dtype}, "
          f"class counts {np.bincount(y).tolist()}; JAX {jax.__version__} ({jax.default_backend()}), "
          f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPU cores")
    load0, failures, rows = os.getloadavg()[0], [], []
    for name in args.models:
        r = check(name, x, y, steps[name], min(128, args.n_examples), lrs[name], args.repeats)
        t = r["times"]
        rows.append(f"| {name} | {r['d']:,} | {r['loss']:.4f} / {r['accuracy']:.3f} | {r['rel_loss']:.1e} | "
                    f"{r['rel_logits']:.1e} | {r['rel_grad']:.1e} | "
                    f"{t['JAX forward']:.3f} / {t['torch forward']:.3f} | "
                    f"{t['JAX gradient']:.3f} / {t['torch gradient']:.3f} | {t['so.Problem.grad']:.3f} |")
        for key, tol in (("rel_loss", 1e-5), ("rel_logits", 1e-5), ("rel_grad", 1e-4), ("rel_prob", 1e-5)):
            if not r[key] <= tol:
                failures.append(f"{name}: {key} = {r[key]:.1e} > {tol:.0e}")
    print("\n| model | d | train loss / accuracy | loss rel. diff | logits rel. diff | gradient rel. diff | "
          "forward JAX / torch (s) | gradient JAX / torch (s) | so.Problem.grad (s) |")
    print("|---|---:|---|---:|---:|---:|---|---|---:|")
    print("\n".join(rows))
    print(f"\n{args.n_examples} images, {args.threads} threads; load average (1 min) {load0:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    if failures:
        raise SystemExit("the torch twins disagree: " + "; ".join(failures))
    print("\nall checks passed")


if __name__ == "__main__":
    main()
