"""The adaptive preconditioners against Optax's blocks of the same name.

Each option of `scale_by_rss`, `scale_by_rms`, `scale_by_adam`,
`scale_by_adamax`, `scale_by_amsgrad` and `scale_by_lion` is run on a fixed
gradient sequence beside Optax's; then what Optax lacks or does differently:
moment dtypes (``mu_dtype``, NEW ``nu_dtype``), bfloat16 params and values
traced inside jit. The invariants every building block keeps are in
`test_building_blocks.py`.
"""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from _helpers import NESTED_PARAMS, gradient_sequence, run_updates

import jopt

# Relative tolerance against Optax in float32. jopt keeps hyperparameters as
# float32 arrays, so ``1 - b1`` is computed from float32(b1) where Optax
# computes it from the Python double: a relative difference of ~2e-7 per
# step, well under 1e-5 after a few steps.
RTOL = 1e-5
ATOL = 1e-6


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
  grads = gradient_sequence(6, NESTED_PARAMS)
  ours, _ = run_updates(ours_fn(**kwargs), grads)
  theirs, _ = run_updates(theirs_fn(**kwargs), grads, standard=True)
  for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
    chex.assert_trees_all_equal_dtypes(a, NESTED_PARAMS)
    chex.assert_trees_all_close(
      a, b, rtol=RTOL, atol=ATOL, custom_message=f"step {step}"
    )


def test_adam_state_fields_match_optax():
  # Code that reads `state.mu` / `state.nu` / `state.count` keeps working.
  ours = jopt.scale_by_adam().init(NESTED_PARAMS)
  assert set(jopt.ScaleByAdamState._fields) == set(
    optax.ScaleByAdamState._fields
  )
  assert int(ours.inner_state.count) == 0


@pytest.mark.parametrize(
  # A bf16 nu needs 1 - b2 above half bf16's epsilon: b2 = 0.99, not 0.999.
  "kwargs",
  [{"mu_dtype": jnp.bfloat16}, {"nu_dtype": jnp.bfloat16, "b2": 0.99}],
)
def test_adam_moment_dtypes(kwargs):
  grads = gradient_sequence(5, NESTED_PARAMS)
  ours, state = run_updates(jopt.adam(0.1, **kwargs), grads)
  adam_state = state.inner_state[0]
  mu_dtype = jnp.dtype(kwargs.get("mu_dtype", jnp.float32))
  nu_dtype = jnp.dtype(kwargs.get("nu_dtype", jnp.float32))
  assert {x.dtype for x in jax.tree.leaves(adam_state.mu)} == {mu_dtype}
  assert {x.dtype for x in jax.tree.leaves(adam_state.nu)} == {nu_dtype}
  chex.assert_trees_all_equal_dtypes(ours[-1], NESTED_PARAMS)
  # Adam's updates are of order 1, and a moment stored in bf16 carries a
  # relative rounding error of 2^-9 per step, amplified where the moving
  # average cancels (gradients of changing sign): agreement to bf16
  # precision, 2e-2 relative and 1e-3 absolute. For mu_dtype the reference
  # is Optax's, which also stores mu in bf16 (it multiplies the bf16 mu by
  # b1 in bf16 where jopt upcasts it first); Optax has no nu_dtype, so
  # there the reference keeps float32 moments.
  reference = optax.adam(
    0.1, b2=kwargs.get("b2", 0.999), mu_dtype=kwargs.get("mu_dtype")
  )
  tol = {"rtol": 2e-2, "atol": 1e-3}
  theirs, _ = run_updates(reference, grads, standard=True)
  chex.assert_trees_all_close(ours, theirs, **tol)


def test_adam_warns_when_a_low_precision_moment_cannot_move():
  # With b2 = 0.999 a step moves nu by 0.1%, under half a bf16 ulp (0.4%):
  # stored in bf16, nu would keep its first value forever.
  with pytest.warns(UserWarning, match="nu_dtype=bfloat16 with b2=0.999"):
    jopt.adam(0.1, nu_dtype=jnp.bfloat16)
  with pytest.warns(UserWarning, match="mu_dtype=bfloat16 with b1=0.999"):
    jopt.scale_by_adam(b1=0.999, mu_dtype=jnp.bfloat16)


def test_adam_bfloat16_params_stay_bfloat16():
  params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), NESTED_PARAMS)
  grads = gradient_sequence(4, params)
  ours, state = run_updates(jopt.adam(0.1, nesterov=True), grads, params)
  theirs, _ = run_updates(
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
  grads = gradient_sequence(3, NESTED_PARAMS)

  @jax.jit
  def traced(values):
    return run_updates(factory(**values), grads)[0]

  expected, _ = run_updates(factory(**values), grads)
  chex.assert_trees_all_close(traced(values), expected, rtol=1e-6)
  names = jopt.get_hyperparams(factory(**values).init(NESTED_PARAMS))
  # The starting values are read only by `init`: not kept in the state.
  init_only = {"initial_accumulator_value", "initial_scale"}
  assert sorted(names) == sorted(set(values) - init_only)
