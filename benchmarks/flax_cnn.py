"""Flax's MNIST CNN swept by `jopt.sweep.run` against that example's Python loop.

DESIGN.md "Performance 7": a model no one here wrote, run as its users run
it. The model has the layers of Flax's NNX MNIST example (two 3x3
``nnx.Conv`` with ``nnx.BatchNorm``, ``nnx.Dropout`` and 2x2 average
pooling, then ``nnx.Linear`` layers), sized for scikit-learn's 8x8 digits
(the first ``nnx.Linear`` takes 2 * 2 * 64 = 256 features); nothing in it
is changed for jopt. The task: K learning rates (log-spaced), SGD with
momentum 0.9, ``--steps`` steps of batch 128, then the validation loss.

* ``flax loop``: the example's way, one rate after another: a new model and
  ``nnx.Optimizer(model, optax.sgd(lr, 0.9))`` per rate, an ``@nnx.jit``
  train step called from Python once per batch (the optimizer is part of
  the step's static graph, so each rate compiles again, as it does for a
  user).
* ``jopt.sweep.run``: the same model and steps as one pure ``train_fn``
  (``nnx.split``/``nnx.merge`` around `jopt.sweep.scan`, the NNX recipe
  of docs/guides/sweeps.md), every rate in one compiled, sharded program; first call, so
  its compile is included.

Both train on the same batches (drawn on the host from one seed) from the
same initial weights and dropout stream, so the validation losses agree to
float32 rounding (printed). The process is started as a user starts one
(no XLA flags); the figures are end to end, compiles included, best of
``--repeats`` cold runs (jopt's caches emptied between runs).

    python benchmarks/flax_cnn.py                 # 8 rates x 60 steps
    python benchmarks/flax_cnn.py --rates 16 --steps 100
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jopt
from jopt import sweep

# One CPU device per core, as the README tells a user to start; the Flax
# loop runs on the first device, as it would.
jopt.use_cpu_devices()

BATCH = 128


class CNN(nnx.Module):
  """The layers of Flax's NNX MNIST CNN, for 8x8 single-channel images."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
    self.batch_norm1 = nnx.BatchNorm(32, rngs=rngs)
    self.dropout1 = nnx.Dropout(rate=0.025, rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
    self.batch_norm2 = nnx.BatchNorm(64, rngs=rngs)
    self.linear1 = nnx.Linear(2 * 2 * 64, 256, rngs=rngs)
    self.dropout2 = nnx.Dropout(rate=0.025, rngs=rngs)
    self.linear2 = nnx.Linear(256, 10, rngs=rngs)

  def __call__(self, x):
    pool = lambda x: nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))  # noqa: E731
    x = pool(self.dropout1(nnx.relu(self.batch_norm1(self.conv1(x)))))
    x = pool(nnx.relu(self.batch_norm2(self.conv2(x))))
    x = x.reshape(x.shape[0], -1)
    x = self.dropout2(nnx.relu(self.linear1(x)))
    return self.linear2(x)


def loss_fn(model: CNN, x, y):
  logits = model(x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@nnx.jit
def train_step(model: CNN, optimizer: nnx.Optimizer, x, y):
  loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def eval_loss(model: CNN, x, y):
  return loss_fn(model, x, y)


def data(steps: int):
  digits = load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  x_tr, x_val, y_tr, y_val = train_test_split(
    x, digits.target.astype(np.int32), test_size=0.2, random_state=0
  )
  rng = np.random.default_rng(0)
  batches = np.stack(
    [rng.choice(len(x_tr), BATCH, replace=False) for _ in range(steps)]
  )
  return x_tr, y_tr, x_val, y_val, batches


def flax_loop(rates, x_tr, y_tr, x_val, y_val, batches) -> np.ndarray:
  losses = []
  for lr in rates:
    model = CNN(rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
      model, optax.sgd(float(lr), momentum=0.9), wrt=nnx.Param
    )
    model.train()
    for idx in batches:
      train_step(model, optimizer, x_tr[idx], y_tr[idx])
    model.eval()
    losses.append(float(eval_loss(model, x_val, y_val)))
  return np.array(losses)


def jopt_sweep(rates, x_tr, y_tr, x_val, y_val, batches) -> np.ndarray:
  x_tr, y_tr, x_val, y_val = map(jnp.asarray, (x_tr, y_tr, x_val, y_val))
  batches = jnp.asarray(batches)

  def train_fn(hparams, key):
    del key  # the same weights and dropout stream as the loop's
    model = CNN(rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(
      model, jopt.sgd(hparams["lr"], momentum=0.9), wrt=nnx.Param
    )
    model.train()
    graphdef, state = nnx.split((model, optimizer))

    def step(state, idx):
      model, optimizer = nnx.merge(graphdef, state)
      loss, grads = nnx.value_and_grad(loss_fn)(model, x_tr[idx], y_tr[idx])
      optimizer.update(model, grads)
      return nnx.state((model, optimizer)), loss

    state, _ = sweep.scan(step, state, batches)
    model, _ = nnx.merge(graphdef, state)
    model.eval()
    return {"val_loss": loss_fn(model, x_val, y_val)}

  res = sweep.run(
    train_fn,
    {"lr": sweep.choice(list(rates))},
    num_trials=len(rates),
    key=jax.random.key(0),
    strategy="grid",
    progress=False,
  )
  order = np.argsort(np.asarray(res.hparams["lr"]))
  return np.asarray(res.metrics["val_loss"])[order]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rates", type=int, default=8)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument(
    "--repeats",
    type=int,
    default=2,
    help="cold runs of each; the best is reported",
  )
  args = p.parse_args()

  rates = np.geomspace(1e-3, 0.3, args.rates)
  split = data(args.steps)
  print(
    f"jax {jax.__version__}, {len(jax.devices())} x "
    f"{jax.devices()[0].device_kind} device(s); {args.rates} rates x "
    f"{args.steps} steps, batch {BATCH}; best of {args.repeats} cold runs"
  )

  times = {"flax loop": [], "jopt.sweep.run": []}
  for _ in range(args.repeats):
    jax.clear_caches()  # a new process has compiled nothing
    start = time.perf_counter()
    loop_losses = flax_loop(rates, *split)
    times["flax loop"].append(time.perf_counter() - start)

    sweep.clear_caches()
    jax.clear_caches()
    start = time.perf_counter()
    sweep_losses = jopt_sweep(rates, *split)
    times["jopt.sweep.run"].append(time.perf_counter() - start)

  rel = np.abs(sweep_losses - loop_losses) / np.abs(loop_losses)
  for lr, a, b in zip(rates, loop_losses, sweep_losses, strict=True):
    print(f"  lr {lr:8.4f}  val loss: flax loop {a:.5f}  jopt {b:.5f}")
  print(
    f"validation losses: median relative difference {np.median(rel):.1e},"
    f" max {np.max(rel):.1e}"
  )
  best = {k: min(v) for k, v in times.items()}
  for k, v in best.items():
    print(
      f"{k:<16} {v:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[k])})"
    )
  print(
    f"RATIO jopt.sweep.run vs flax loop: "
    f"{best['flax loop'] / best['jopt.sweep.run']:.2f}x faster (target >= 3x)"
  )


if __name__ == "__main__":
  main()
