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

One engine under every search
-----------------------------
`run`, `run_stepwise`, `successive_halving`, `hyperband`, `pbt`,
`optuna_search` and `lr_find` differ only in how they choose what to train
next. They share one executor (placement, lanes, compiles, gathering,
divergence) and one loop (checkpoints, progress), so every guarantee below
holds for each of them.

Lanes, devices and hosts
------------------------
The trial axis is sharded over a one-dimensional `jax.sharding.Mesh` named
``"trials"`` over ``jax.devices()`` (or ``devices=``). Each device computes
its trials in vmapped groups of a fixed width, ``lanes`` (1 on CPU, 32 on
accelerators, fewer for a search of fewer trials), one group after
another. XLA picks kernels by width, and training amplifies their rounding,
so a fixed width is what makes a trial's result the same, bit for bit,
on 1 or 8 devices, in one process or several, in one call or in chunks
(``max_parallel``): tested for matmul models on every search and for the
CNN of ``examples/cnn``. XLA may still rewrite a non-exact step of your own
``train_fn`` in one program and not in another: it turned Adam's
``moment / scalar`` into ``moment * (1 / scalar)`` inside a one-device sweep
only, so jopt writes that multiply out, and so should yours. Trial ``i``
always uses
``jax.random.fold_in(key, i)``.

Several hosts: call ``jax.distributed.initialize(...)`` in every process
and run the same script (see docs/guides/multiprocess.md). Every process
samples the same trials (sampling is deterministic in ``key``), places its
shards with ``jax.make_array_from_callback``, and gets the whole result
(gathered from every process); only process 0 writes checkpoint files.

Memory
------
With ``max_parallel=None`` a call of `run` holds every trial of a static
group; the engine reads the compiled call's per-device footprint from
``compiled.memory_analysis()`` and shrinks the call (down to one group of
lanes per device) until it fits ``0.8 * (bytes_limit - bytes_in_use)`` on
GPU/TPU, or 2 GiB per device on CPU (override with
``JOPT_SWEEP_MEMORY_BYTES``). Padding lanes repeat a real trial and are
dropped from the results.

Checkpoints
-----------
``checkpoint_dir=`` works for every search. Every file is written to a
temporary name and renamed, so ``kill -9`` at any moment leaves complete
files only; rerunning the same call resumes and returns the result an
uninterrupted run would have, bit for bit. The folder's manifest
fingerprints the call (space, key, settings, the lowered program of one
trial); every other file carries the fingerprint and what it holds (the
trial indices of a `run` call; the step of a stepwise search's state) and
is checked when read, so files of another search are refused, with the
file named.

Live progress
-------------
``jopt.sweep.report(step, loss=...)`` inside ``train_fn`` moves the
progress bar by trial-steps and shows the best value so far (a host
callback, only when the sweep shows progress; otherwise it compiles to
nothing). Each callback costs about as much as a few small training steps,
so ``jopt.sweep.scan``, a ``lax.scan`` that reports a fixed number of
times per trial from outside its inner loop, is the cheap way to report
from a long loop. Stepwise searches move their bar after every segment by
themselves.

Caches
------
A sweep called again in the same process (a notebook cell run twice)
reuses the programs compiled for an earlier one with the same functions,
shapes, JAX settings, compiler options and devices. Every such cache is
bounded; `clear_caches` empties them all. Every search's result counts its
programs the same way: ``num_compiles`` needed, ``num_cached`` of them
reused, with ``compile_time`` and ``memory_bytes``; every search takes
``compiler_options`` (see `run`).

TensorBoard
-----------
``result.to_tensorboard(logdir)`` (`to_tensorboard`) writes one run per
trial with the HParams plugin's configuration, so TensorBoard's HParams
dashboard lists the trials in a table, parallel coordinates and scatter
plots; curves become scalars over steps. It needs tensorboardX
(``pip install "jopt[tensorboard]"``), not TensorFlow.
"""

from jopt.sweep._common import MemoryBudgetWarning as MemoryBudgetWarning
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
from jopt.sweep.results._result import SweepResult as SweepResult
from jopt.sweep.results._result import Trial as Trial
from jopt.sweep.strategies._run import run as run

# isort: split
from jopt.sweep.results._tensorboard import to_tensorboard as to_tensorboard
from jopt.sweep.runtime._caches import clear_caches as clear_caches
from jopt.sweep.runtime._report import report as report
from jopt.sweep.runtime._report import scan as scan
from jopt.sweep.strategies._bayes import optuna_search as optuna_search
from jopt.sweep.strategies._bayes_rounds import OptunaResult as OptunaResult
from jopt.sweep.strategies._halving import hyperband as hyperband
from jopt.sweep.strategies._halving import (
  successive_halving as successive_halving,
)
from jopt.sweep.strategies._lr_find import LRFindResult as LRFindResult
from jopt.sweep.strategies._lr_find import lr_find as lr_find
from jopt.sweep.strategies._pbt import PBTResult as PBTResult
from jopt.sweep.strategies._pbt import pbt as pbt
from jopt.sweep.strategies._stepwise import AdaptiveResult as AdaptiveResult
from jopt.sweep.strategies._stepwise import run_stepwise as run_stepwise

__all__ = [
  "AdaptiveResult",
  "Choice",
  "Distribution",
  "IntUniform",
  "LRFindResult",
  "LogUniform",
  "MemoryBudgetWarning",
  "OptunaResult",
  "PBTResult",
  "SweepResult",
  "Trial",
  "Uniform",
  "choice",
  "clear_caches",
  "hyperband",
  "int_uniform",
  "log_uniform",
  "lr_find",
  "optuna_search",
  "pbt",
  "report",
  "run",
  "run_stepwise",
  "sample",
  "scan",
  "successive_halving",
  "to_tensorboard",
  "uniform",
]
