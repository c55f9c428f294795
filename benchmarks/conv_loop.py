"""A convolution's weight gradient inside a loop body on XLA:CPU, and jopt's fix.

The minimal repro (small enough for an upstream report, jax-ml/jax#12868):
SGD on a 3x3 convolution's kernel, ``w - 1e-4 * grad(sum(conv(x, w)**2))``,
x ``[128, 4, 4, 32]``, w ``[3, 3, 32, 64]``, run four ways in one process:

* ``python loop``: the step jitted and called from Python (what a Flax
  user's training loop does);
* ``fori_loop``: the same steps inside one ``lax.fori_loop`` (what every
  compiled training run, and so every sweep, does);
* ``fori_loop, canonical``: the loop after `jopt.sweep.runtime._conv`'s rewrite
  (the convolutions' operands transposed into XLA:CPU's canonical
  ``b01f_01io->b01f`` layout), as every jopt sweep program is compiled;
* ``fori_loop, unrolled``: the loop fully unrolled (a slow compile).

Then the loop compiled with per-executable XLA options that might matter,
and (``--variants``) the same three ways for strided, dilated, 1x1,
grouped and VALID convolutions and 1-D and 3-D ones.
Printed: ms per step (median of repeats after a warm-up), each row's ratio
to the Python loop, and the largest difference of its result from the
Python loop's. The forward convolution and the input gradient are timed
alone too, to show that only the weight gradient is slow in the loop.

    python benchmarks/conv_loop.py
    python benchmarks/conv_loop.py --layout NCHW --steps 20
    python benchmarks/conv_loop.py --variants        # the other kinds too
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from jax import lax

from jopt.sweep.runtime._conv import canonical_convs

# Per-executable options tried on the plain loop (none is process-wide).
OPTIONS = [
  {"xla_cpu_use_onednn": True},
  {"xla_cpu_use_xnnpack": True},
  {"xla_cpu_copy_insertion_use_region_analysis": True},
  {"xla_backend_optimization_level": 1},
]


def parse_args() -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=30, help="steps per timed run")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument(
    "--layout",
    choices=["NHWC", "NCHW"],
    default="NHWC",
    help="the input's layout (kernel HWIO or OIHW)",
  )
  p.add_argument(
    "--variants",
    action="store_true",
    help="also time strided, dilated, 1x1, grouped, VALID, "
    "1-D and 3-D convolutions",
  )
  return p.parse_args()


# name: (x shape, kernel shape, dimension numbers, conv keyword arguments)
VARIANTS = {
  "strided 2x2, SAME": (
    (128, 8, 8, 32),
    (3, 3, 32, 64),
    "NHWC",
    dict(window_strides=(2, 2), padding="SAME"),
  ),
  "dilated 2, SAME": (
    (128, 6, 6, 32),
    (3, 3, 32, 64),
    "NHWC",
    dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2)),
  ),
  "1x1": (
    (128, 4, 4, 32),
    (1, 1, 32, 64),
    "NHWC",
    dict(window_strides=(1, 1), padding="VALID"),
  ),
  "grouped (4 groups)": (
    (128, 4, 4, 32),
    (3, 3, 8, 64),
    "NHWC",
    dict(window_strides=(1, 1), padding="SAME", feature_group_count=4),
  ),
  "VALID": (
    (128, 6, 6, 32),
    (3, 3, 32, 64),
    "NHWC",
    dict(window_strides=(1, 1), padding="VALID"),
  ),
  "1-D, width 16": (
    (128, 16, 32),
    (3, 32, 64),
    "NWC",
    dict(window_strides=(1,), padding="SAME"),
  ),
  "3-D, 4x4x4": (
    (32, 4, 4, 4, 16),
    (3, 3, 3, 16, 32),
    "NDHWC",
    dict(window_strides=(1, 1, 1), padding="SAME"),
  ),
}


def variant_rows(steps: int, repeats: int) -> None:
  print(
    f"\n{'variant (weight-gradient step)':<28} {'python':>8} "
    f"{'loop':>8} {'canonical':>10} {'loop/py':>8} {'canon/py':>9}"
  )
  for name, (x_shape, w_shape, layout, kwargs) in VARIANTS.items():
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, x_shape)
    w = 0.05 * jax.random.normal(kw, w_shape)
    dn = (layout, layout[1:-1] + "IO", layout)

    def step(w, x, dn=dn, kwargs=kwargs):
      return w - 1e-4 * jax.grad(
        lambda w: jnp.sum(
          lax.conv_general_dilated(x, w, dimension_numbers=dn, **kwargs) ** 2
        )
      )(w)

    def loop(w, x, step=step):
      return lax.fori_loop(0, steps, lambda i, w: step(w, x), w)

    jitted = jax.jit(step)

    def python_loop(w, x, jitted=jitted):
      for _ in range(steps):
        w = jitted(w, x)
      return w

    py, _ = timed(python_loop, (w, x), steps, repeats)
    lp, _ = timed(jax.jit(loop), (w, x), steps, repeats)
    cn, _ = timed(jax.jit(canonical_convs(loop)), (w, x), steps, repeats)
    print(
      f"{name:<28} {py:8.2f} {lp:8.2f} {cn:10.2f} {lp / py:8.2f} {cn / py:9.2f}"
    )


def problem(layout: str):
  kx, kw = jax.random.split(jax.random.key(0))
  if layout == "NHWC":
    x = jax.random.normal(kx, (128, 4, 4, 32))
    w = 0.05 * jax.random.normal(kw, (3, 3, 32, 64))
    dn = ("NHWC", "HWIO", "NHWC")
  else:
    x = jax.random.normal(kx, (128, 32, 4, 4))
    w = 0.05 * jax.random.normal(kw, (64, 32, 3, 3))
    dn = ("NCHW", "OIHW", "NCHW")

  def conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

  return x, w, conv


def timed(fn, args, steps: int, repeats: int) -> tuple[float, jax.Array]:
  """Median ms per step of ``fn(*args)`` (which runs ``steps`` steps)."""
  out = jax.block_until_ready(fn(*args))  # compile and warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times) / steps, out


def main() -> None:
  args = parse_args()
  x, w, conv = problem(args.layout)
  steps = args.steps

  def step(w, x):
    return w - 1e-4 * jax.grad(lambda w: jnp.sum(conv(x, w) ** 2))(w)

  def loop(w, x):
    return lax.fori_loop(0, steps, lambda i, w: step(w, x), w)

  def unrolled(w, x):
    return lax.fori_loop(0, steps, lambda i, w: step(w, x), w, unroll=True)

  jitted_step = jax.jit(step)

  def python_loop(w, x):
    for _ in range(steps):
      w = jitted_step(w, x)
    return w

  rows = [
    ("python loop", python_loop),
    ("fori_loop", jax.jit(loop)),
    ("fori_loop, canonical (jopt)", jax.jit(canonical_convs(loop))),
    ("fori_loop, unrolled", jax.jit(unrolled)),
  ]
  lowered = jax.jit(loop).lower(w, x)
  for options in OPTIONS:
    try:
      compiled = lowered.compile(compiler_options=options)
    except Exception as e:  # noqa: BLE001  (an option this XLA lacks)
      print(f"option {options}: not accepted ({type(e).__name__})")
      continue
    rows.append((f"fori_loop, {options}", compiled))

  print(
    f"jax {jax.__version__}, {jax.devices()[0].device_kind}, layout "
    f"{args.layout}, {steps} steps, median of {args.repeats}"
  )
  print(
    f"{'weight-gradient step':<62} {'ms/step':>8} {'x python':>9} "
    f"{'max |diff|':>11}"
  )
  base, reference = None, None
  for name, fn in rows:
    ms, out = timed(fn, (w, x), steps, args.repeats)
    if base is None:
      base, reference = ms, out
    diff = float(jnp.max(jnp.abs(out - reference)))
    print(f"{name:<62} {ms:8.2f} {ms / base:9.2f} {diff:11.2e}")

  # Only the weight gradient is slow inside the loop.
  def forward_loop(w, x):
    return lax.fori_loop(
      0, steps, lambda i, x: 0.5 * conv(x, w)[..., :32] + x, x
    )

  def input_grad_loop(w, x):
    return lax.fori_loop(
      0,
      steps,
      lambda i, x: x - 1e-4 * jax.grad(lambda x: jnp.sum(conv(x, w) ** 2))(x),
      x,
    )

  for name, fn in [
    ("forward conv, fori_loop", forward_loop),
    ("input gradient, fori_loop", input_grad_loop),
  ]:
    ms, _ = timed(jax.jit(fn), (w, x), steps, args.repeats)
    print(f"{name:<62} {ms:8.2f}")
  if args.variants:
    variant_rows(steps, args.repeats)


if __name__ == "__main__":
  main()
