"""jopt.sweep: a whole hyperparameter search as one compiled, sharded program.

Write the training of ONE trial as a pure function,
``train_fn(hparams, key) -> metrics``, describe the space, and `run` trains
every trial at once: the trial axis is vmapped, chunked to fit memory and
sharded over all devices, in one compile per chunk shape.

>>> import jax, jax.numpy as jnp, jopt
>>> def train_fn(hparams, key):
...   w = jax.random.normal(key, (3,))
...   def step(w, _):
...     w = w - hparams["lr"] * 2 * w
...     return w, jnp.sum(w ** 2)
...   w, losses = jax.lax.scan(step, w, length=50)
...   return {"loss": losses[-1], "curve": losses}
>>> space = {"lr": jopt.sweep.log_uniform(1e-3, 0.5)}
>>> result = jopt.sweep.run(train_fn, space, num_trials=16,
...                         key=jax.random.key(0), progress=False)
>>> result.metrics["curve"].shape
(16, 50)
>>> bool(result.best("loss").hparams["lr"] > 0.1)
True

Which hyperparameters take which path
-------------------------------------
* Numbers (`uniform`, `log_uniform`, `int_uniform`, numeric `choice`) are
  vmapped: each trial gets a scalar array (float32, or int32 for integers).
  Pass it straight to an optimizer constructor inside ``train_fn``
  (``jopt.adam(hparams["lr"])``): jopt keeps hyperparameters in the state,
  so a traced value works wherever a float does.
* Categorical choices that change the computation but not the shapes (the
  optimizer, the activation): ``choice(["adam", "sgd"])`` passes an int32
  index into the values; pick the branch with ``jax.lax.switch``. Still one
  compile.
* Choices that change shapes or structure (a width, a number of layers):
  ``choice([64, 128], static=True)``. Trials are grouped by value and each
  group is compiled once; ``train_fn`` receives the Python value.
* Batch size, two ways: static (one compile per size), or swept as a
  number by masking inside the largest batch: draw ``max_batch`` examples,
  weight them with ``jnp.arange(max_batch) < hparams["batch_size"]`` and
  divide by the batch size. One compile, at the cost of computing the
  largest batch for every trial.

How ``max_parallel`` is chosen
------------------------------
With ``max_parallel=None`` the engine compiles a chunk holding all trials
of a group and reads its per-device footprint from
``compiled.memory_analysis()`` (arguments + outputs + temporaries). The
budget is ``0.8 * (bytes_limit - bytes_in_use)`` from
``device.memory_stats()`` on GPU/TPU, and 2 GiB per device on CPU, where no
limit is reported (override with ``JOPT_SWEEP_MEMORY_BYTES``). If the chunk
does not fit, it shrinks (in proportion, then along the line through the
last two footprints) and compiles again until it fits. A chunk is a
multiple of the number of devices used; the last one is padded with copies
of a real trial and the padding is dropped from the results.

Devices and hosts
-----------------
The trial axis is sharded over a one-dimensional `jax.sharding.Mesh` whose
axis is named ``"trials"``, made from ``jax.devices()`` (or ``devices=``).
Trial ``i`` always uses ``jax.random.fold_in(key, i)``, so its numbers do
not depend on the chunk size or on the number of devices, up to float32
rounding (XLA may choose other kernels for other per-device widths; equal
chunk shapes are bit-identical). Multi-host: call
``jax.distributed.initialize()`` in every process and run the same script;
every process samples the same trials (sampling is deterministic in
``key``), ``jax.devices()`` then spans all hosts, the inputs are placed with
global shardings, results are all-gathered so every process gets the full
`SweepResult`, and only process 0 writes checkpoints.

Checkpoints
-----------
``checkpoint_dir=`` saves each finished chunk atomically (a temporary file
then ``os.replace``) next to a manifest that fingerprints the call (space,
key, strategy, trials, folds, the training function's name and source) and
records the chunk sizes. Rerunning the same call after a crash, even a
``kill -9``, skips the finished chunks and returns a result identical to an
uninterrupted run; a folder made by another call raises ValueError.

TensorBoard
-----------
``result.to_tensorboard(logdir)`` (`to_tensorboard`) writes one run per
trial with the HParams plugin's configuration, so TensorBoard's HParams
dashboard lists the trials in a table, parallel coordinates and scatter
plots; curves become scalars over steps. It needs tensorboardX
(``pip install "jopt[tensorboard]"``), not TensorFlow.
"""

from jopt.sweep._engine import run as run
from jopt.sweep._result import SweepResult as SweepResult
from jopt.sweep._result import Trial as Trial
from jopt.sweep._space import Choice as Choice
from jopt.sweep._space import Distribution as Distribution
from jopt.sweep._space import IntUniform as IntUniform
from jopt.sweep._space import LogUniform as LogUniform
from jopt.sweep._space import Uniform as Uniform
from jopt.sweep._space import choice as choice
from jopt.sweep._space import int_uniform as int_uniform
from jopt.sweep._space import log_uniform as log_uniform
from jopt.sweep._space import sample as sample
from jopt.sweep._space import uniform as uniform

# isort: split
# [helper-adaptive-search] exports
from jopt.sweep._bayes import OptunaResult as OptunaResult
from jopt.sweep._bayes import optuna_search as optuna_search
from jopt.sweep._halving import hyperband as hyperband
from jopt.sweep._halving import successive_halving as successive_halving
from jopt.sweep._lr_find import LRFindResult as LRFindResult
from jopt.sweep._lr_find import lr_find as lr_find
from jopt.sweep._pbt import PBTResult as PBTResult
from jopt.sweep._pbt import pbt as pbt
from jopt.sweep._stepwise import AdaptiveResult as AdaptiveResult
from jopt.sweep._stepwise import run_stepwise as run_stepwise
from jopt.sweep._tensorboard import to_tensorboard as to_tensorboard

__all__ = [
    "AdaptiveResult",
    "Choice",
    "Distribution",
    "IntUniform",
    "LRFindResult",
    "LogUniform",
    "OptunaResult",
    "PBTResult",
    "SweepResult",
    "Trial",
    "Uniform",
    "choice",
    "hyperband",
    "int_uniform",
    "log_uniform",
    "lr_find",
    "optuna_search",
    "pbt",
    "run",
    "run_stepwise",
    "sample",
    "successive_halving",
    "to_tensorboard",
    "uniform",
]
