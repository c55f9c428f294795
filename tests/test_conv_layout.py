"""jopt.sweep.runtime._conv: convolutions rewritten into XLA:CPU's canonical layout.

The rewrite only renames which axis is which (explicit transposes around a
convolution with canonical dimension numbers), so a rewritten training loop
must compute what the original computes, within float32 rounding: XLA:CPU
may sum the canonical convolution in another order (its fast kernels,
against the generic emitter), a few ulps per step, which training compounds
slowly (under 2e-5 after three steps of these tiny problems).
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jopt
from jopt.sweep.runtime import _conv, _executor, _programs

# name: (x shape, kernel shape, dimension numbers, conv kwargs)
CASES = {
  "nhwc_same": (
    (4, 6, 6, 3),
    (3, 3, 3, 5),
    ("NHWC", "HWIO", "NHWC"),
    dict(window_strides=(1, 1), padding="SAME"),
  ),
  "nhwc_strided_valid": (
    (4, 7, 7, 3),
    (3, 3, 3, 4),
    ("NHWC", "HWIO", "NHWC"),
    dict(window_strides=(2, 2), padding="VALID"),
  ),
  "nhwc_dilated": (
    (2, 8, 8, 2),
    (3, 3, 2, 4),
    ("NHWC", "HWIO", "NHWC"),
    dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2)),
  ),
  "nhwc_lhs_dilated": (
    (2, 4, 4, 2),
    (2, 2, 2, 3),
    ("NHWC", "HWIO", "NHWC"),
    dict(window_strides=(1, 1), padding=((1, 1), (0, 1)), lhs_dilation=(2, 1)),
  ),
  "nhwc_1x1": (
    (4, 5, 5, 6),
    (1, 1, 6, 4),
    ("NHWC", "HWIO", "NHWC"),
    dict(window_strides=(1, 1), padding="VALID"),
  ),
  "nhwc_grouped": (
    (3, 5, 5, 4),
    (3, 3, 2, 6),
    ("NHWC", "HWIO", "NHWC"),
    dict(window_strides=(1, 1), padding="SAME", feature_group_count=2),
  ),
  "nchw_oihw": (
    (2, 3, 6, 6),
    (4, 3, 3, 3),
    ("NCHW", "OIHW", "NCHW"),
    dict(window_strides=(1, 2), padding="SAME"),
  ),
  "conv1d": (
    (3, 9, 2),
    (3, 2, 4),
    ("NWC", "WIO", "NWC"),
    dict(window_strides=(2,), padding="SAME"),
  ),
  "conv3d": (
    (2, 4, 4, 4, 2),
    (2, 2, 2, 2, 3),
    ("NDHWC", "DHWIO", "NDHWC"),
    dict(window_strides=(1, 1, 1), padding="VALID"),
  ),
}


def _training_loop(dimension_numbers, kwargs, steps=3):
  """SGD on a conv's kernel and input, as a loop body: every conv of the
  forward pass, the input gradient and the weight gradient appears."""

  def loss(w, x):
    y = lax.conv_general_dilated(
      x, w, dimension_numbers=dimension_numbers, **kwargs
    )
    return jnp.sum(jnp.tanh(y) ** 2)

  def train(w, x):
    def body(carry, _):
      w, x = carry
      gw, gx = jax.grad(loss, argnums=(0, 1))(w, x)
      return (w - 0.1 * gw, x - 0.1 * gx), loss(w, x)

    return lax.scan(body, (w, x), length=steps)

  return train


def _args(name):
  x_shape, w_shape, _, _ = CASES[name]
  kx, kw = jax.random.split(jax.random.key(0))
  return (0.3 * jax.random.normal(kw, w_shape), jax.random.normal(kx, x_shape))


def _convs(closed):
  """Every conv_general_dilated equation, nested programs included."""
  found = []

  def visit(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive is jax.extend.core.primitives.conv_general_dilated_p:
        found.append(eqn)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        visit(sub)

  visit(closed.jaxpr)
  return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_rewritten_loop_computes_the_same_values(name):
  _, _, dn, kwargs = CASES[name]
  train = _training_loop(dn, kwargs)
  args = _args(name)
  expected = jax.jit(train)(*args)
  got = jax.jit(_conv.canonical_convs(train))(*args)
  # Float32 rounding: XLA may accumulate the rewritten conv in another order.
  chex.assert_trees_all_close(got, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_convolution_is_left_canonical(name):
  _, _, dn, kwargs = CASES[name]
  train = _training_loop(dn, kwargs)
  args = _args(name)
  before = _convs(jax.make_jaxpr(train)(*args))
  after = _convs(jax.make_jaxpr(_conv.canonical_convs(train))(*args))
  assert len(before) == len(after) == 4  # forward twice, two gradients
  assert any(
    not _conv.is_canonical(e.params["dimension_numbers"]) for e in before
  )
  assert all(_conv.is_canonical(e.params["dimension_numbers"]) for e in after)
  for old, new in zip(before, after, strict=True):  # nothing else changed
    for key in (
      "window_strides",
      "padding",
      "lhs_dilation",
      "rhs_dilation",
      "feature_group_count",
      "batch_group_count",
    ):
      assert old.params[key] == new.params[key]


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_step_matches_the_python_loops_step(name):
  # What a Flax user's Python loop computes: the step jitted outside any
  # loop. One step differs by float32 rounding alone (XLA:CPU's canonical
  # kernels sum in another order than the generic emitter): a few ulps of
  # values of order 1.
  _, _, dn, kwargs = CASES[name]
  w, x = _args(name)
  step = jax.jit(lambda w, x: _training_loop(dn, kwargs, steps=1)(w, x)[0])
  got = jax.jit(_conv.canonical_convs(_training_loop(dn, kwargs, steps=1)))(
    w, x
  )[0]
  chex.assert_trees_all_close(got, step(w, x), rtol=0, atol=2e-6)


def test_nested_programs_are_rewritten():
  _, _, dn, kwargs = CASES["nhwc_same"]
  w, x = _args("nhwc_same")
  grad = jax.grad(
    lambda w, x: jnp.sum(
      lax.conv_general_dilated(x, w, dimension_numbers=dn, **kwargs) ** 2
    )
  )

  def fn(w, x, flag):
    inner = jax.jit(lambda w, x: grad(w, x))
    checkpointed = jax.checkpoint(lambda w: grad(w, x))
    return lax.cond(
      flag, lambda: inner(w, x), lambda: jax.vmap(checkpointed)(w[None])[0]
    )

  closed = jax.make_jaxpr(_conv.canonical_convs(fn))(w, x, True)
  convs = _convs(closed)
  assert len(convs) >= 4
  assert all(_conv.is_canonical(e.params["dimension_numbers"]) for e in convs)
  for flag in (True, False):
    chex.assert_trees_all_close(
      jax.jit(_conv.canonical_convs(fn))(w, x, flag),
      jax.jit(fn)(w, x, flag),
      rtol=2e-5,
      atol=2e-5,
    )


def test_pytrees_in_and_out():
  def fn(params, batch):
    y = lax.conv_general_dilated(
      batch["x"],
      params[0],
      (1, 1),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return {"y": y, "n": params[1] + 1, "none": None}

  w, x = _args("nhwc_same")
  args = ((w, jnp.int32(3)), {"x": x})
  got = _conv.canonical_convs(fn)(*args)
  chex.assert_trees_all_equal(got, fn(*args))


def test_the_sweep_compiles_canonical_convolutions_on_cpu():
  # The executor is every search's one compile site: its program must hold
  # no convolution in a layout XLA:CPU leaves on the slow emitter.
  _, _, dn, kwargs = CASES["nhwc_same"]
  train = _training_loop(dn, kwargs)
  w, x = _args("nhwc_same")
  ex = _executor.Executor(jax.devices()[:2], lanes=1)

  def trial(scale):
    return train(w * scale, x)[1]

  fn = ex.per_trial(trial, 2, (0,))
  compiled = _programs.get(
    ex, lambda: fn, (jnp.ones((2,), jnp.float32),), owner=trial, name="t"
  )
  labels = re.findall(r"dim_labels=(\S+?)[,}\s]", compiled.as_text())
  assert labels
  assert set(labels) <= {"b01f_01io->b01f"}, set(labels)


def test_a_sweep_of_a_conv_model_equals_its_trials_run_alone():
  _, _, dn, kwargs = CASES["nhwc_same"]
  train = _training_loop(dn, kwargs)
  w, x = _args("nhwc_same")

  def train_fn(hp, key):
    del key
    (_, _), losses = train(w * hp["scale"], x)
    return {"loss": losses[-1]}

  res = jopt.sweep.run(
    train_fn,
    {"scale": jopt.sweep.uniform(0.5, 1.5)},
    num_trials=3,
    key=jax.random.key(1),
    progress=False,
  )
  alone = [
    jax.jit(train_fn)({"scale": s}, None)["loss"] for s in res.hparams["scale"]
  ]
  np.testing.assert_allclose(res.metrics["loss"], np.array(alone), rtol=2e-5)


def test_lowering_traces_once_and_leaves_a_program_without_convs_alone():
  traces = []

  def mlp(w, x):
    traces.append(1)
    return jnp.tanh(x @ w).sum()

  w, x = jnp.ones((3, 2)), jnp.ones((4, 3))
  lowered = _conv.lower_canonical(mlp, (w, x))
  assert len(traces) == 1  # the user's Python runs once
  assert lowered.as_text() == jax.jit(mlp).lower(w, x).as_text()

  _, _, dn, kwargs = CASES["nhwc_same"]
  train = _training_loop(dn, kwargs)

  def counted(w, x):
    traces.append(1)
    return train(w, x)

  args = _args("nhwc_same")
  compiled = _conv.lower_canonical(counted, args, donate_argnums=(0,)).compile()
  assert len(traces) == 2
  labels = re.findall(r"dim_labels=(\S+?)[,}\s]", compiled.as_text())
  assert labels and set(labels) <= {"b01f_01io->b01f"}
  chex.assert_trees_all_close(
    compiled(*_args("nhwc_same")), jax.jit(train)(*args), rtol=2e-5, atol=2e-5
  )
