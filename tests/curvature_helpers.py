"""Test helpers: count XLA compilations (``jax.log_compiles``) to test "no recompiling on a
second call", and jit-compiled dense references (Hessian, noise covariance)."""

import contextlib
import logging

import equinox as eqx
import jax


class _Counter(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.names = []

    def emit(self, record):
        msg = record.getMessage()
        if msg.startswith("Compiling"):
            self.names.append(msg.split(" with ")[0])

    @property
    def n(self):
        return len(self.names)


@contextlib.contextmanager
def count_compiles():
    """``with count_compiles() as c: ...`` then ``c.n`` compilations happened inside."""
    counter = _Counter()
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles():
            yield counter
    finally:
        logger.removeHandler(counter)


# dense references, jit-compiled (eagerly they dispatch hundreds of small ops)
@eqx.filter_jit
def dense_hessian(problem, theta):
    return problem.hessian(theta)


@eqx.filter_jit
def dense_noise(problem, theta):
    import sde_opt as so

    return so.MinibatchNoise().covariance(problem, theta)
