"""The problem and runners the optimizer, lr-free and building-block tables
share: a small nested pytree of params, a non-quadratic loss, a scanned
trajectory and a bfloat16 run."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jopt

BF16_STEPS = 3


def init_params():
  """A nested pytree with a matrix and a scalar leaf (kept small: compile
  time grows with the number of leaves)."""
  return {
    "dense": {"w": jax.random.normal(jax.random.key(0), (3, 4))},
    "scale": jnp.asarray(1.5, jnp.float32),  # strong-typed, as from init
  }


def loss(params):
  # Non-quadratic, so the gradients change direction and scale over steps.
  def leaf(x):
    return jnp.sum(0.5 * x * x + 0.3 * jnp.sin(3.0 * x))

  return sum(leaf(x) for x in jax.tree.leaves(params))


def trajectory(tx, apply, loss, params, state, steps):
  """Runs ``steps`` updates; returns (params after each step, final state)."""

  def body(carry, _):
    p, s = carry
    updates, s = tx.update(jax.grad(loss)(p), s, p)
    p = apply(p, updates)
    return (p, s), p

  (_, state), path = jax.lax.scan(body, (params, state), None, length=steps)
  return path, state


def stack(trees):
  """Stacks a list of pytrees leaf by leaf along a new leading axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def jit_traced_once(fn, name):
  """``jax.jit(fn)``, failing any call that traces ``fn`` a second time.

  chex counts traces per function name and source, so each runner gets its
  own ``name``.
  """
  counted = functools.wraps(fn)(lambda *a: fn(*a))
  counted.__name__ = name
  return jax.jit(chex.assert_max_traces(counted, n=1))


def run_in_bfloat16(tx):
  """``(updates, state, params)`` after BF16_STEPS steps from bf16 params."""

  @jax.jit
  def run(params):
    def body(carry, _):
      p, s = carry
      updates, s = tx.update(jax.grad(loss)(p), s, p)
      return (jopt.apply_updates(p, updates), s), updates

    (params, state), updates = jax.lax.scan(
      body, (params, tx.init(params)), None, length=BF16_STEPS
    )
    return updates, state, params

  return run(jax.tree.map(lambda x: x.astype(jnp.bfloat16), init_params()))


# --- Fixed gradient sequences, for the building blocks ----------------------


# A nested tree with a matrix, a vector and a scalar leaf.
NESTED_PARAMS = {
  "w": jnp.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.3]]),
  "inner": {"b": jnp.array([0.1, -0.2]), "s": jnp.array(0.7)},
}


def gradient_sequence(num_steps, params, seed=0):
  """A list of ``num_steps`` gradient pytrees shaped and typed like
  ``params``: standard normal draws, so with sign flips and mixed scales."""
  rng = np.random.default_rng(seed)
  return [
    jax.tree.map(
      lambda p: jnp.asarray(
        rng.normal(size=np.shape(p)), dtype=jnp.asarray(p).dtype
      ),
      params,
    )
    for _ in range(num_steps)
  ]


def run_updates(tx, grads, params=NESTED_PARAMS, standard=False):
  """``(list of updates, final state)`` of ``tx`` fed ``grads``, eagerly.

  ``standard=True`` runs under JAX's standard dtype promotion, for Optax,
  which relies on implicit promotion where the test environment is strict.
  """
  state = tx.init(params)
  outs = []
  for g in grads:
    with jax.numpy_dtype_promotion("standard" if standard else "strict"):
      u, state = tx.update(g, state, params)
    outs.append(u)
  return outs, state
