"""A small CNN for 8x8 digits in Flax NNX: conv, pool, conv, dropout, dense."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class CNN(nnx.Module):
  """conv(3x3) -> relu -> max-pool(2x2) -> conv(3x3) -> relu -> dropout -> dense.

  ``model.train()`` turns dropout on (drawing masks from the ``dropout``
  stream of ``rngs``), ``model.eval()`` turns it off.
  """

  def __init__(
    self,
    features: tuple[int, int] = (16, 32),
    num_classes: int = 10,
    dropout_rate: float = 0.25,
    *,
    rngs: nnx.Rngs,
  ):
    self.conv1 = nnx.Conv(1, features[0], kernel_size=(3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(
      features[0], features[1], kernel_size=(3, 3), rngs=rngs
    )
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    # Two 'SAME' convolutions and one 2x2 pool: 8x8 images become 4x4.
    self.dense = nnx.Linear(4 * 4 * features[1], num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = nnx.relu(self.conv1(x))
    x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nnx.relu(self.conv2(x))
    x = x.reshape(x.shape[:-3] + (-1,))
    return self.dense(self.dropout(x))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy for integer labels (Optax's loss)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of examples whose arg-max logit is the label."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def init_params(model: nnx.Module, key: jax.Array) -> None:
  """Sets every ``nnx.Param`` of ``model`` from ONE random draw, in place.

  Kernels LeCun-uniform (the same variance as the layers' default
  LeCun-normal), biases zero. Why: each layer's own initialiser draws with
  its own key, and every one of those random-number circuits is compiled
  separately, which on CPU costs seconds of compile time per layer; one draw
  sliced into the kernels compiles once (the layers' own draws, now unused,
  are dropped by the compiler).
  """
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  sizes = [leaf.size for leaf in leaves]
  noise = jax.random.uniform(key, (sum(sizes),), minval=-1.0, maxval=1.0)
  new, start = [], 0
  for leaf, size in zip(leaves, sizes, strict=True):
    if leaf.ndim == 1:  # A bias.
      new.append(jnp.zeros(leaf.shape, leaf.dtype))
    else:
      fan_in = size // leaf.shape[-1]
      scale = jnp.sqrt(3.0 / fan_in).astype(leaf.dtype)
      new.append(scale * noise[start : start + size].reshape(leaf.shape))
    start += size
  nnx.update(model, jax.tree.unflatten(treedef, new))
