"""Convolutions in the layout XLA:CPU runs fast, also inside loop bodies.

A convolution's weight gradient, as JAX's autodiff writes it, has
dimension numbers such as ``f01b_i01o->01bf``: the batch is contracted and
the features play the batch. Outside a loop XLA:CPU rewrites such a
convolution into the canonical ``b01f_01io->b01f`` form with transposes
around it and runs it on its fast convolution kernels; inside a
``while`` body (every ``lax.scan`` and ``fori_loop``: a whole training run)
it leaves it alone and runs it on the generic emitter, 25-45x slower
(jax-ml/jax#12868). Every jopt training program is such a loop.

`canonical_convs` writes those transposes out in the traced program:
every ``conv_general_dilated`` whose operands or result are not in the
canonical layout becomes ``transpose``s around the same convolution with
canonical dimension numbers. Strides, padding, dilations, feature and
batch groups and the number of spatial dimensions are kept as they are:
the dimension numbers only name which axis is which, so the rewritten
program computes the same convolution from the same operands.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.extend as jex
import numpy as np
from jax.sharding import PartitionSpec

_core = jex.core
_CONV = _core.primitives.conv_general_dilated_p
_TRANSPOSE = _core.primitives.transpose_p


def canonical_convs(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn`` with each of its convolutions in XLA:CPU's canonical layout.

  The result traces ``fn`` (with `jax.make_jaxpr`), rewrites the
  convolutions of the program and of every program nested in it (loop
  bodies, branches, ``jit``, ``shard_map``, ``remat``), and evaluates the
  rewritten program. Use it on a function about to be jitted for CPU.
  """

  @functools.wraps(fn)
  def wrapped(*args):
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    rewritten = rewrite_closed(closed)
    flat = _core.jaxpr_as_fun(rewritten)(*jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), flat)

  return wrapped


def lower_canonical(
  fn: Callable[..., Any], args: Any, donate_argnums: tuple[int, ...] = ()
) -> Any:
  """``jax.jit(fn).lower(*args)`` with the convolutions made canonical.

  ``fn`` is traced once. A program with no convolution to rewrite is
  lowered as traced; otherwise the rewritten program is lowered, by
  evaluating its jaxpr (not ``fn``'s Python again).
  """
  traced = jax.jit(fn, donate_argnums=donate_argnums).trace(*args)
  rewritten = rewrite_closed(traced.jaxpr)
  if rewritten.jaxpr is traced.jaxpr.jaxpr:
    return traced.lower()
  out_tree = jax.tree.structure(traced.out_info)

  def run(*args):
    flat = _core.jaxpr_as_fun(rewritten)(*jax.tree.leaves(args))
    return jax.tree.unflatten(out_tree, flat)

  return jax.jit(run, donate_argnums=donate_argnums).lower(*args)


def rewrite_closed(closed: Any) -> Any:
  """A ClosedJaxpr with `canonical_convs`' rewrite applied throughout."""
  return _Rewriter().closed(closed)


def is_canonical(dimension_numbers: Any) -> bool:
  """Whether a convolution is already ``b01f_01io->b01f`` (any rank)."""
  lhs, rhs, out = dimension_numbers
  return (
    tuple(lhs) == _canonical_io(len(lhs))
    and tuple(rhs) == _canonical_kernel(len(rhs))
    and tuple(out) == _canonical_io(len(out))
  )


def _canonical_io(rank: int) -> tuple[int, ...]:
  # (batch, feature, spatial...) axes of an array laid out b, 0, 1, ..., f
  return (0, rank - 1, *range(1, rank - 1))


def _canonical_kernel(rank: int) -> tuple[int, ...]:
  # (out feature, in feature, spatial...) axes of 0, 1, ..., i, o
  return (rank - 1, rank - 2, *range(rank - 2))


def _io_order(spec: tuple[int, ...]) -> tuple[int, ...]:
  # The axes of an lhs/out array, in canonical order b, 0, 1, ..., f.
  return (spec[0], *spec[2:], spec[1])


def _kernel_order(spec: tuple[int, ...]) -> tuple[int, ...]:
  # The axes of a kernel, in canonical order 0, 1, ..., i, o.
  return (*spec[2:], spec[1], spec[0])


class _Rewriter:
  """One pass over a program; a sub-program met twice is rewritten once."""

  def __init__(self):
    self._done: dict[int, Any] = {}

  def closed(self, closed: Any) -> Any:
    return self._memo(
      closed, lambda: closed.replace(jaxpr=self.open(closed.jaxpr))
    )

  def open(self, jaxpr: Any) -> Any:
    return self._memo(jaxpr, lambda: self._rewrite(jaxpr))

  def _memo(self, obj: Any, make: Callable[[], Any]) -> Any:
    key = id(obj)
    if key not in self._done:
      self._done[key] = (obj, make())  # obj kept alive: ids stay unique
    return self._done[key][1]

  def _param(self, value: Any) -> Any:
    if isinstance(value, _core.ClosedJaxpr):
      return self.closed(value)
    if isinstance(value, _core.Jaxpr):
      return self.open(value)
    if isinstance(value, tuple) and any(
      isinstance(v, (_core.ClosedJaxpr, _core.Jaxpr)) for v in value
    ):
      return tuple(self._param(v) for v in value)
    return value

  def _rewrite(self, jaxpr: Any) -> Any:
    eqns = []
    changed = False
    for eqn in jaxpr.eqns:
      params = {k: self._param(v) for k, v in eqn.params.items()}
      if any(params[k] is not eqn.params[k] for k in params):
        eqn = eqn.replace(params=params)
        changed = True
      if eqn.primitive is _CONV and not is_canonical(
        eqn.params["dimension_numbers"]
      ):
        eqns.extend(_canonical_eqns(eqn))
        changed = True
      else:
        eqns.append(eqn)
    return jaxpr.replace(eqns=eqns) if changed else jaxpr


def _transposed_aval(aval: Any, perm: tuple[int, ...]) -> Any:
  shape = tuple(aval.shape[p] for p in perm)
  sharding = getattr(aval, "sharding", None)
  if sharding is None or not hasattr(sharding, "spec"):
    return aval.update(shape=shape)
  spec = tuple(sharding.spec) + (None,) * (len(perm) - len(sharding.spec))
  return aval.update(
    shape=shape,
    sharding=sharding.update(spec=PartitionSpec(*(spec[p] for p in perm))),
  )


def _transpose_eqn(
  src: Any, perm: tuple[int, ...], eqn: Any, dst: Any = None
) -> tuple[Any, Any]:
  if dst is None:
    dst = _core.Var(_transposed_aval(src.aval, perm))
  new = _core.new_jaxpr_eqn(
    [src],
    [dst],
    _TRANSPOSE,
    {"permutation": perm},
    _core.no_effects,
    eqn.source_info,
    eqn.ctx,
  )
  return new, dst


def _canonical_eqns(eqn: Any) -> list[Any]:
  """``transpose``s, the canonical convolution, the result transposed back."""
  lhs, rhs = eqn.invars
  (out,) = eqn.outvars
  dn = eqn.params["dimension_numbers"]
  rank = len(dn.lhs_spec)
  lhs_perm = _io_order(dn.lhs_spec)
  rhs_perm = _kernel_order(dn.rhs_spec)
  out_perm = _io_order(dn.out_spec)
  eqns = []
  lhs_eqn, lhs_t = _transpose_eqn(lhs, lhs_perm, eqn)
  rhs_eqn, rhs_t = _transpose_eqn(rhs, rhs_perm, eqn)
  eqns += [lhs_eqn, rhs_eqn]
  conv_out = _core.Var(_transposed_aval(out.aval, out_perm))
  params = dict(
    eqn.params,
    dimension_numbers=jax.lax.ConvDimensionNumbers(
      _canonical_io(rank), _canonical_kernel(rank), _canonical_io(rank)
    ),
  )
  eqns.append(
    _core.new_jaxpr_eqn(
      [lhs_t, rhs_t],
      [conv_out],
      _CONV,
      params,
      eqn.effects,
      eqn.source_info,
      eqn.ctx,
    )
  )
  back = tuple(int(p) for p in np.argsort(out_perm))
  eqns.append(_transpose_eqn(conv_out, back, eqn, dst=out)[0])
  return eqns
