"""jopt.sweep's caches: keyed on every JAX setting, bounded, cleared."""

import contextlib
import gc

import jax
import jax.numpy as jnp
import numpy as np
from _quadratic_search import quad_init, quad_segment

from jopt import sweep
from jopt.sweep.runtime import _caches

KEY = jax.random.key(0)
SPACE = {"lr": sweep.uniform(0.1, 1.0)}


def draw(hp, key):
  return {"loss": hp["lr"] * jnp.sum(jax.random.uniform(key, (5,)))}


def draw_init(hp, key):
  return {"w": jax.random.uniform(key, (3,)) * hp["lr"]}


def draw_segment(state, hp):
  del hp
  return state, {"loss": jnp.sum(state["w"])}


@contextlib.contextmanager
def partitionable_flipped():
  """jax_threefry_partitionable flipped by jax.config.update, then restored."""
  before = jax.config.jax_threefry_partitionable
  jax.config.update("jax_threefry_partitionable", not before)
  try:
    yield
  finally:
    jax.config.update("jax_threefry_partitionable", before)


def _run(fn, **kw):
  return sweep.run(fn, SPACE, num_trials=4, key=KEY, progress=False, **kw)


def _halving(init, segment):
  return sweep.successive_halving(
    init,
    segment,
    SPACE,
    num_trials=4,
    key=KEY,
    eta=2,
    max_segments=2,
    metric="loss",
    progress=False,
  )


def test_run_after_a_jax_setting_changes_is_a_fresh_run():
  # As jax.jit does, a setting that changes what tracing makes of train_fn
  # (here the random bits a key gives) traces it again.
  old = _run(draw)
  with partitionable_flipped():
    again = _run(draw)
    fresh = _run(lambda hp, key: draw(hp, key))  # a new function object
  np.testing.assert_array_equal(again.metrics["loss"], fresh.metrics["loss"])
  assert not np.array_equal(again.metrics["loss"], old.metrics["loss"])


def test_run_after_a_setting_changes_in_a_context_manager():
  old = _run(draw)
  with jax.threefry_partitionable(not jax.config.jax_threefry_partitionable):
    again = _run(draw)
    fresh = _run(lambda hp, key: draw(hp, key))
  np.testing.assert_array_equal(again.metrics["loss"], fresh.metrics["loss"])
  assert not np.array_equal(again.metrics["loss"], old.metrics["loss"])
  np.testing.assert_array_equal(_run(draw).metrics["loss"], old.metrics["loss"])


def test_halving_after_a_jax_setting_changes_is_a_fresh_search():
  old = _halving(draw_init, draw_segment)
  with partitionable_flipped():
    again = _halving(draw_init, draw_segment)
    fresh = _halving(lambda hp, key: draw_init(hp, key), draw_segment)
  np.testing.assert_array_equal(again.metrics["loss"], fresh.metrics["loss"])
  assert not np.array_equal(again.metrics["loss"], old.metrics["loss"])


def test_clear_caches_makes_the_next_sweep_compile_again():
  def fn(hp, key):
    return {"loss": hp["lr"] * jnp.sum(jax.random.normal(key, (4,)))}

  sweep.clear_caches()  # whatever tests ran before in this process
  first = _run(fn)
  assert _run(fn).num_cached == 1  # the same program, reused
  assert _halving(quad_init, quad_segment).num_compiles == 2
  assert _halving(quad_init, quad_segment).num_compiles == 2  # shared
  sweep.clear_caches()
  assert all(len(cache) == 0 for cache in _caches.registered())
  again = _run(fn)
  assert (again.num_compiles, again.num_cached) == (1, 0)
  np.testing.assert_array_equal(again.metrics["loss"], first.metrics["loss"])
  assert _halving(quad_init, quad_segment).num_compiles == 2


def test_every_sweep_cache_is_registered_and_bounded():
  # Every cache a module of jopt.sweep holds, found by type: a new cache
  # that is not registered (so clear_caches would miss it) fails here.
  import importlib
  import pkgutil

  import jopt.sweep as package

  found = []
  for info in pkgutil.walk_packages(package.__path__, "jopt.sweep."):
    module = importlib.import_module(info.name)
    found += [v for v in vars(module).values() if isinstance(v, _caches.Cache)]
  assert len(found) >= 5  # programs, executables, footprints, populations...
  registered = {id(c) for c in _caches.registered()}
  for cache in found:
    assert id(cache) in registered, cache
    assert 0 < cache.max_size <= 256


def test_a_cache_holds_at_most_its_size_and_forgets_dead_owners():
  cache = _caches.Cache("test", 3)
  try:
    for i in range(5):
      cache.put(i, str(i))
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == "4"
    cache.get(2)  # used: the oldest is now 3
    cache.put(5, "5")
    assert cache.get(3) is None and cache.get(2) == "2"

    class Owner:
      pass

    owner = Owner()
    cache.put("k", "v", owner=owner)
    assert cache.get("k", owner=owner) == "v"
    assert cache.get("k", owner=Owner()) is None
    size = len(cache)
    del owner
    gc.collect()
    assert len(cache) == size - 1
    plain = object()  # not weakly referenceable: not kept
    cache.put("k", "v", owner=plain)
    assert cache.get("k", owner=plain) is None
  finally:
    cache.unregister()
