"""jopt vs Optax: time of one jitted update + apply step.

For each optimizer and parameter count, both libraries' steps are jitted the
same way (params and optimizer state donated), warmed up, then timed in
interleaved repeats (jopt, optax, jopt, ...) so that machine drift affects
both alike. Prints the median time of each and the ratio jopt / optax.

    python benchmarks/update_step.py --sizes 1M,16M --repeats 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import jopt

OPTIMIZERS = {
  "sgd": lambda lib: lib.sgd(1e-3),
  "momentum": lambda lib: lib.sgd(1e-3, momentum=0.9),
  "rmsprop": lambda lib: lib.rmsprop(1e-3),
  "adam": lambda lib: lib.adam(1e-3),
}


def parse_size(text: str) -> int:
  scale = {"K": 10**3, "M": 10**6, "G": 10**9}
  text = text.strip().upper()
  if text[-1] in scale:
    return int(float(text[:-1]) * scale[text[-1]])
  return int(text)


def make_params(size: int, leaves: int, key: jax.Array) -> dict:
  """``leaves`` 2-D float32 arrays holding ``size`` numbers in all."""
  per_leaf = size // leaves
  cols = 1024
  keys = jax.random.split(key, leaves)
  return {
    f"layer{i}": jax.random.normal(k, (per_leaf // cols, cols), jnp.float32)
    for i, k in enumerate(keys)
  }


def make_step(tx, apply_updates):
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return apply_updates(params, updates), state

  # Params and state are donated: the step updates them in place, as in
  # a training loop.
  return jax.jit(step, donate_argnums=(0, 1))


def bench(name: str, size: int, leaves: int, warmup: int, repeats: int):
  params = make_params(size, leaves, jax.random.key(0))
  grads = jax.tree.map(
    lambda p: 1e-3 * p, make_params(size, leaves, jax.random.key(1))
  )
  runs = {}
  for lib_name, lib, apply in (
    ("jopt", jopt, jopt.apply_updates),
    ("optax", optax, optax.apply_updates),
  ):
    tx = OPTIMIZERS[name](lib)
    p = jax.tree.map(jnp.copy, params)
    runs[lib_name] = [make_step(tx, apply), p, tx.init(p)]

  def call(lib_name):
    step, p, s = runs[lib_name]
    start = time.perf_counter()
    p, s = step(p, s, grads)
    jax.block_until_ready((p, s))
    runs[lib_name][1:] = [p, s]
    return time.perf_counter() - start

  for _ in range(warmup):
    for lib_name in runs:
      call(lib_name)
  times = {lib_name: [] for lib_name in runs}
  for _ in range(repeats):
    for lib_name in runs:
      times[lib_name].append(call(lib_name))
  return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--sizes",
    default="1M,16M",
    help="comma-separated parameter counts (K/M suffixes)",
  )
  parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  parser.add_argument(
    "--leaves", type=int, default=4, help="number of parameter arrays"
  )
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=30)
  args = parser.parse_args(argv)

  print(
    f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
    f"{args.leaves} leaves, median of {args.repeats} interleaved repeats"
  )
  header = (
    f"{'optimizer':<10} {'params':>7} {'jopt ms':>9} {'optax ms':>9} "
    f"{'jopt/optax':>10}"
  )
  print(header)
  print("-" * len(header))
  for size_text in args.sizes.split(","):
    size = parse_size(size_text)
    for name in args.optimizers.split(","):
      t = bench(name, size, args.leaves, args.warmup, args.repeats)
      print(
        f"{name:<10} {size_text.strip():>7} {1e3 * t['jopt']:9.3f} "
        f"{1e3 * t['optax']:9.3f} {t['jopt'] / t['optax']:10.3f}",
        flush=True,
      )


if __name__ == "__main__":
  main()
