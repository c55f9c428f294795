"""Focused tests of the adaptive building blocks and the regularizers.

The optimizers (`jopt.adam`, ...) run through the shared table in
`test_optimizers.py`; here each building block is checked against the Optax
block of the same name, plus what Optax lacks (``nu_dtype``, `add_l1`).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jopt

# Relative tolerance against Optax in float32. jopt keeps hyperparameters as
# float32 arrays, so ``1 - b1`` is computed from float32(b1) where Optax
# computes it from the Python double: a relative difference of ~2e-7 per
# step, well under 1e-5 after a few steps.
RTOL = 1e-5
ATOL = 1e-6

PARAMS = {
    "w": jnp.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.3]]),
    "inner": {"b": jnp.array([0.1, -0.2]), "s": jnp.array(0.7)},
}


def _grads(num_steps, params=PARAMS, seed=0):
  """A fixed sequence of gradient pytrees, with some zeros and sign flips."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num_steps):
    out.append(
        jax.tree.map(
            lambda p: jnp.asarray(
                rng.normal(size=np.shape(p)), dtype=jnp.asarray(p).dtype
            ),
            params,
        )
    )
  return out


def _run(tx, grads, params=PARAMS, standard=False):
  """Returns the list of updates ``tx`` gives for ``grads`` (eagerly)."""
  state = tx.init(params)
  outs = []
  for g in grads:
    if standard:
      # Optax relies on implicit promotion, which the strict test
      # environment forbids.
      with jax.numpy_dtype_promotion("standard"):
        u, state = tx.update(g, state, params)
    else:
      u, state = tx.update(g, state, params)
    outs.append(u)
  return outs, state


BLOCKS = {
    "rss": (jopt.scale_by_rss, optax.scale_by_rss, {}),
    "rss_zero_start": (
        jopt.scale_by_rss,
        optax.scale_by_rss,
        {"initial_accumulator_value": 0.0},
    ),
    "rms": (jopt.scale_by_rms, optax.scale_by_rms, {}),
    "rms_eps_out_bias": (
        jopt.scale_by_rms,
        optax.scale_by_rms,
        {"eps_in_sqrt": False, "bias_correction": True, "decay": 0.8},
    ),
    "rms_initial_scale": (
        jopt.scale_by_rms,
        optax.scale_by_rms,
        {"initial_scale": 1.0},
    ),
    "rms_centered": (
        lambda **kw: jopt.scale_by_rms(centered=True, **kw),
        optax.scale_by_stddev,
        {"initial_scale": 1.0},
    ),
    "rms_centered_eps_out": (
        lambda **kw: jopt.scale_by_rms(centered=True, **kw),
        optax.scale_by_stddev,
        {"initial_scale": 0.5, "eps_in_sqrt": False, "decay": 0.7},
    ),
    "adam": (jopt.scale_by_adam, optax.scale_by_adam, {}),
    "adam_nesterov": (
        jopt.scale_by_adam,
        optax.scale_by_adam,
        {"nesterov": True, "b1": 0.8},
    ),
    "adam_eps_root": (
        jopt.scale_by_adam,
        optax.scale_by_adam,
        {"eps_root": 1e-3, "eps": 0.0, "b2": 0.9},
    ),
    "adamax": (jopt.scale_by_adamax, optax.scale_by_adamax, {}),
    "amsgrad": (jopt.scale_by_amsgrad, optax.scale_by_amsgrad, {"b2": 0.9}),
    "amsgrad_paper": (
        jopt.scale_by_amsgrad,
        optax.scale_by_amsgrad,
        {"bias_correction_mu": False, "bias_correction_nu": False},
    ),
    "lion": (jopt.scale_by_lion, optax.scale_by_lion, {}),
    "lion_smooth": (
        jopt.scale_by_lion,
        optax.scale_by_lion,
        {"mode": "smooth", "smooth_beta": 3.0},
    ),
    "lion_refined": (
        jopt.scale_by_lion,
        optax.scale_by_lion,
        {"mode": "refined"},
    ),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_matches_optax(name):
  ours_fn, theirs_fn, kwargs = BLOCKS[name]
  grads = _grads(6)
  ours, _ = _run(ours_fn(**kwargs), grads)
  theirs, _ = _run(theirs_fn(**kwargs), grads, standard=True)
  for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
    chex.assert_trees_all_equal_dtypes(a, PARAMS)
    chex.assert_trees_all_close(
        a, b, rtol=RTOL, atol=ATOL, custom_message=f"step {step}"
    )


def test_adam_state_fields_match_optax():
  # Code that reads `state.mu` / `state.nu` / `state.count` keeps working.
  ours = jopt.scale_by_adam().init(PARAMS)
  assert set(jopt.ScaleByAdamState._fields) == set(
      optax.ScaleByAdamState._fields
  )
  assert int(ours.inner_state.count) == 0


@pytest.mark.parametrize(
    # A bf16 nu needs 1 - b2 above half bf16's epsilon: b2 = 0.99, not 0.999.
    "kwargs", [{"mu_dtype": jnp.bfloat16},
               {"nu_dtype": jnp.bfloat16, "b2": 0.99}]
)
def test_adam_moment_dtypes(kwargs):
  grads = _grads(5)
  ours, state = _run(jopt.adam(0.1, **kwargs), grads)
  adam_state = state.inner_state[0]
  mu_dtype = jnp.dtype(kwargs.get("mu_dtype", jnp.float32))
  nu_dtype = jnp.dtype(kwargs.get("nu_dtype", jnp.float32))
  assert {x.dtype for x in jax.tree.leaves(adam_state.mu)} == {mu_dtype}
  assert {x.dtype for x in jax.tree.leaves(adam_state.nu)} == {nu_dtype}
  chex.assert_trees_all_equal_dtypes(ours[-1], PARAMS)
  # Adam's updates are of order 1, and a moment stored in bf16 carries a
  # relative rounding error of 2^-9 per step, amplified where the moving
  # average cancels (gradients of changing sign): agreement to bf16
  # precision, 2e-2 relative and 1e-3 absolute. For mu_dtype the reference
  # is Optax's, which also stores mu in bf16 (it multiplies the bf16 mu by
  # b1 in bf16 where jopt upcasts it first); Optax has no nu_dtype, so
  # there the reference keeps float32 moments.
  reference = optax.adam(0.1, b2=kwargs.get("b2", 0.999),
                         mu_dtype=kwargs.get("mu_dtype"))
  tol = {"rtol": 2e-2, "atol": 1e-3}
  theirs, _ = _run(reference, grads, standard=True)
  chex.assert_trees_all_close(ours, theirs, **tol)


def test_adam_warns_when_a_low_precision_moment_cannot_move():
  # With b2 = 0.999 a step moves nu by 0.1%, under half a bf16 ulp (0.4%):
  # stored in bf16, nu would keep its first value forever.
  with pytest.warns(UserWarning, match="nu_dtype=bfloat16 with b2=0.999"):
    jopt.adam(0.1, nu_dtype=jnp.bfloat16)
  with pytest.warns(UserWarning, match="mu_dtype=bfloat16 with b1=0.999"):
    jopt.scale_by_adam(b1=0.999, mu_dtype=jnp.bfloat16)


def test_adam_bfloat16_params_stay_bfloat16():
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), PARAMS)
  grads = _grads(4, params)
  ours, state = _run(jopt.adam(0.1, nesterov=True), grads, params)
  theirs, _ = _run(
      optax.adam(0.1, nesterov=True), grads, params, standard=True
  )
  chex.assert_trees_all_equal_dtypes(ours[-1], params)
  chex.assert_trees_all_equal_dtypes(state.inner_state[0].mu, params)
  # bf16 arithmetic on both sides; the hyperparameters' float32 rounding
  # can flip the last of bf16's 8 mantissa bits (relative 2^-7).
  chex.assert_trees_all_close(ours, theirs, rtol=1e-2, atol=1e-2)


TRACEABLE = [
    (jopt.scale_by_adam, {"b1": 0.8, "b2": 0.95, "eps": 1e-3, "eps_root": 0.1}),
    (
        jopt.scale_by_amsgrad,
        {"b1": 0.8, "b2": 0.95, "eps": 1e-3, "eps_root": 0.1},
    ),
    (jopt.scale_by_adamax, {"b1": 0.8, "b2": 0.95, "eps": 1e-3}),
    (jopt.scale_by_rss, {"initial_accumulator_value": 0.5, "eps": 1e-3}),
    (jopt.scale_by_rms, {"decay": 0.5, "eps": 1e-3, "initial_scale": 0.2}),
    (jopt.scale_by_lion, {"b1": 0.5, "b2": 0.8, "smooth_beta": 2.0}),
    (jopt.add_decayed_weights, {"weight_decay": 0.3}),
    (jopt.add_l1, {"l1": 0.3}),
]


@pytest.mark.parametrize(
    "factory, values", TRACEABLE, ids=lambda x: getattr(x, "__name__", "")
)
def test_block_accepts_traced_hyperparams(factory, values):
  # Built inside jit from traced values (a sweep does this), a block must
  # compute what it computes with the same values given as numbers.
  grads = _grads(3)

  @jax.jit
  def traced(values):
    return _run(factory(**values), grads)[0]

  expected, _ = _run(factory(**values), grads)
  chex.assert_trees_all_close(traced(values), expected, rtol=1e-6)
  names = jopt.get_hyperparams(factory(**values).init(PARAMS))
  assert sorted(names) == sorted(values)


# --- Regularizers --------------------------------------------------------------


def test_add_l1_closed_form():
  params = {"a": jnp.array([2.0, 0.0, -0.5]), "b": jnp.array(-3.0)}
  grads = {"a": jnp.array([0.1, 0.2, 0.3]), "b": jnp.array(1.0)}
  tx = jopt.chain(jopt.add_l1(0.25), jopt.sgd(0.5))
  updates, _ = tx.update(grads, tx.init(params), params)
  # -lr * (g + l1 * sign(p)); sign(0) = 0, so a zero weight only sees g.
  expected = {
      "a": jnp.array([-0.5 * (0.1 + 0.25), -0.5 * 0.2, -0.5 * (0.3 - 0.25)]),
      "b": jnp.array(-0.5 * (1.0 - 0.25)),
  }
  chex.assert_trees_all_close(updates, expected, rtol=1e-6)


def test_add_l1_mask_and_schedule():
  params = {"a": jnp.array([2.0, -1.0]), "b": jnp.array([-3.0])}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = jopt.add_l1(
      lambda count: 0.1 * (count.astype(jnp.float32) + 1),
      mask={"a": True, "b": False},
  )
  state = tx.init(params)
  for step in range(3):
    updates, state = tx.update(zeros, state, params)
    chex.assert_trees_all_close(
        updates,
        {"a": 0.1 * (step + 1) * jnp.array([1.0, -1.0]), "b": zeros["b"]},
        rtol=1e-6,
    )


MASKS = {
    "tree": {"w": True, "inner": {"b": False, "s": True}},
    "prefix": {"w": False, "inner": True},
    "callable": lambda tree: jax.tree.map(lambda x: jnp.ndim(x) != 1, tree),
    "none": None,
}


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_add_decayed_weights_mask_matches_optax(mask):
  grads = _grads(2)
  ours, _ = _run(jopt.add_decayed_weights(0.3, MASKS[mask]), grads)
  theirs, _ = _run(
      optax.add_decayed_weights(0.3, MASKS[mask]), grads, standard=True
  )
  chex.assert_trees_all_close(ours, theirs, rtol=1e-6)
  if mask == "tree":  # A masked-out leaf passes through unchanged.
    chex.assert_trees_all_equal(ours[0]["inner"]["b"], grads[0]["inner"]["b"])


def test_add_decayed_weights_schedule_matches_optax():
  schedule = optax.linear_schedule(0.5, 0.0, 4)
  grads = _grads(5)
  ours, _ = _run(jopt.add_decayed_weights(schedule), grads)
  theirs, _ = _run(optax.add_decayed_weights(schedule), grads, standard=True)
  chex.assert_trees_all_close(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("factory", [jopt.add_decayed_weights, jopt.add_l1])
def test_regularizers_need_params(factory):
  tx = factory(0.1)
  with pytest.raises(ValueError, match="params"):
    tx.update(PARAMS, tx.init(PARAMS))


def test_mismatched_tree_is_a_clear_error():
  tx = jopt.adam(0.1)
  state = tx.init(PARAMS)
  with pytest.raises(ValueError, match="updates"):
    tx.update({"w": PARAMS["w"]}, state)


# --- Validation ------------------------------------------------------------------


BAD_VALUES = [
    (jopt.adam, {"learning_rate": -1.0}, "learning_rate"),
    (jopt.adam, {"learning_rate": 0.1, "b1": 1.0}, "b1"),
    (jopt.adam, {"learning_rate": 0.1, "b2": -0.1}, "b2"),
    (jopt.adam, {"learning_rate": 0.1, "eps": -1e-8}, "eps"),
    (jopt.adam, {"learning_rate": 0.1, "eps_root": -1.0}, "eps_root"),
    (jopt.adamw, {"learning_rate": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    (jopt.nadam, {"learning_rate": 0.1, "b1": 1.5}, "b1"),
    (jopt.adamax, {"learning_rate": 0.1, "b2": 1.0}, "b2"),
    (jopt.amsgrad, {"learning_rate": -0.1}, "learning_rate"),
    (jopt.lion, {"learning_rate": 0.1, "weight_decay": -1.0}, "weight_decay"),
    (jopt.lion, {"learning_rate": 0.1, "b2": 1.0}, "b2"),
    (jopt.rmsprop, {"learning_rate": 0.1, "momentum": 1.0}, "momentum"),
    (jopt.rmsprop, {"learning_rate": 0.1, "decay": float("nan")}, "decay"),
    (jopt.rmsprop, {"learning_rate": 0.1, "initial_scale": -1.0}, "initial_scale"),
    (
        jopt.adagrad,
        {"learning_rate": 0.1, "initial_accumulator_value": -0.1},
        "initial_accumulator_value",
    ),
    (jopt.scale_by_adam, {"b1": -0.5}, "b1"),
    (jopt.scale_by_rss, {"eps": -1.0}, "eps"),
    (jopt.scale_by_lion, {"mode": "soft"}, "mode"),
    (jopt.adamw, {"learning_rate": 0.1, "weight_decay": -0.1}, "weight_decay"),
    (jopt.add_l1, {"l1": -0.1}, "l1"),
]


@pytest.mark.parametrize(
    "factory, kwargs, name",
    BAD_VALUES,
    ids=[f"{f.__name__}-{n}" for f, _, n in BAD_VALUES],
)
def test_bad_values_raise_naming_the_argument(factory, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    factory(**kwargs)
