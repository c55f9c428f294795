"""A small CNN for 8x8 digits: conv, pool, conv, dense, with dropout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class Conv(nn.Module):
  """A 'SAME'-padded, stride-1 convolution written as patches @ kernel.

  Same parameters and initialisation as ``flax.linen.Conv``. Why not
  ``nn.Conv``: vmapped over trials, a convolution whose kernel differs per
  trial becomes a grouped convolution, which XLA runs slowly on CPU; written
  as a matrix product of image patches, it becomes one batched matmul.
  """

  features: int
  kernel_size: tuple[int, int] = (3, 3)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param(
      "kernel",
      nn.initializers.lecun_normal(),
      (kh, kw, x.shape[-1], self.features),
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    batch_shape = x.shape[:-3]
    patches = jax.lax.conv_general_dilated_patches(
      x.reshape((-1,) + x.shape[-3:]),
      (kh, kw),
      (1, 1),
      "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    # Patches come out channel-major: (in_channel, kh, kw).
    kernel = kernel.transpose(2, 0, 1, 3)
    patches = patches.reshape(batch_shape + patches.shape[1:])
    y = patches @ kernel.reshape(-1, self.features)
    return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


class CNN(nn.Module):
  """conv(3x3) -> relu -> max-pool(2x2) -> conv(3x3) -> relu -> dropout -> dense.

  A pure ``apply(params, x)``: parameters are a plain pytree, so a sweep
  initialises one set per trial and vmaps training over them.
  """

  features: tuple[int, int] = (16, 32)
  num_classes: int = 10
  dropout_rate: float = 0.25

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.relu(Conv(self.features[0])(x))
    x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.relu(Conv(self.features[1])(x))
    x = x.reshape(x.shape[:-3] + (-1,))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy for integer labels (Optax's loss)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of examples whose arg-max logit is the label."""
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def init_params(net: nn.Module, key: jax.Array, example: jax.Array):
  """LeCun-uniform kernels and zero biases, from ONE random draw.

  Same variance as Flax's default LeCun-normal initialisation. Why not
  ``net.init(key, x)``: Flax derives one key per layer and draws each kernel
  separately, and every one of those random-number circuits is compiled
  separately, which on CPU costs seconds of compile time per layer; one draw
  sliced into the kernels compiles once.
  """
  shapes = jax.eval_shape(net.init, jax.random.key(0), example)["params"]
  leaves, treedef = jax.tree.flatten(shapes)
  sizes = [leaf.size for leaf in leaves]
  noise = jax.random.uniform(key, (sum(sizes),), minval=-1.0, maxval=1.0)
  params, start = [], 0
  for leaf, size in zip(leaves, sizes, strict=True):
    if leaf.ndim == 1:  # A bias.
      params.append(jnp.zeros(leaf.shape, leaf.dtype))
    else:
      fan_in = size // leaf.shape[-1]
      scale = jnp.sqrt(3.0 / fan_in).astype(leaf.dtype)
      params.append(scale * noise[start : start + size].reshape(leaf.shape))
    start += size
  return jax.tree.unflatten(treedef, params)
