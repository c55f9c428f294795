"""Bad arguments get a clear `ValueError` naming the argument.

Ranges are declared once per constructor and checked on the values the
caller gives, at construction; a gradient tree that does not match the
state is named at the first `update`.
"""

import pytest
from _helpers import NESTED_PARAMS

import jopt


def test_mismatched_tree_is_a_clear_error():
  tx = jopt.adam(0.1)
  state = tx.init(NESTED_PARAMS)
  with pytest.raises(ValueError, match="updates"):
    tx.update({"w": NESTED_PARAMS["w"]}, state)


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
  (
    jopt.rmsprop,
    {"learning_rate": 0.1, "initial_scale": -1.0},
    "initial_scale",
  ),
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
