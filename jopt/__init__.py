"""jopt: composable JAX optimizers whose hyperparameters can be swept.

Every numeric hyperparameter lives in the optimizer state, so a jitted train
step never recompiles when one changes and a whole sweep is one vmapped
program. The API follows Optax: ``init``/``update`` gradient transformations,
chained from small building blocks.
"""

# The core: the protocol, composition, hyperparameters in the state, CPU
# devices.
from jopt._base import EmptyState as EmptyState
from jopt._base import GradientTransformation as GradientTransformation
from jopt._base import apply_updates as apply_updates
from jopt._base import identity as identity
from jopt.transforms._combine import chain as chain
from jopt._hyperparams import HyperparamsState as HyperparamsState
from jopt._hyperparams import get_hyperparams as get_hyperparams
from jopt._hyperparams import set_hyperparams as set_hyperparams
from jopt._cpu_devices import use_cpu_devices as use_cpu_devices

# Transforms: scaling and momentum, adaptive preconditioners, regularizers,
# clipping, masking, wrappers, reduce-on-plateau and early stopping.
from jopt.transforms._scale import ScaleByScheduleState as ScaleByScheduleState
from jopt.transforms._scale import TraceState as TraceState
from jopt.transforms._scale import scale as scale
from jopt.transforms._scale import (
  scale_by_learning_rate as scale_by_learning_rate,
)
from jopt.transforms._scale import scale_by_schedule as scale_by_schedule
from jopt.transforms._scale import trace as trace
from jopt.transforms._adam import ScaleByAdamState as ScaleByAdamState
from jopt.transforms._adam import ScaleByAmsgradState as ScaleByAmsgradState
from jopt.transforms._adam import scale_by_adam as scale_by_adam
from jopt.transforms._adam import scale_by_adamax as scale_by_adamax
from jopt.transforms._adam import scale_by_amsgrad as scale_by_amsgrad
from jopt.transforms._adaptive import ScaleByLionState as ScaleByLionState
from jopt.transforms._adaptive import ScaleByRmsState as ScaleByRmsState
from jopt.transforms._adaptive import ScaleByRssState as ScaleByRssState
from jopt.transforms._adaptive import scale_by_lion as scale_by_lion
from jopt.transforms._adaptive import scale_by_rms as scale_by_rms
from jopt.transforms._adaptive import scale_by_rss as scale_by_rss
from jopt.transforms._regularize import (
  add_decayed_weights as add_decayed_weights,
)
from jopt.transforms._regularize import add_l1 as add_l1
from jopt.transforms._clipping import clip as clip
from jopt.transforms._clipping import clip_by_global_norm as clip_by_global_norm
from jopt.transforms._masking import MaskedNode as MaskedNode
from jopt.transforms._masking import MaskedState as MaskedState
from jopt.transforms._masking import PartitionState as PartitionState
from jopt.transforms._masking import masked as masked
from jopt.transforms._masking import partition as partition
from jopt.transforms._wrappers import ApplyIfFiniteState as ApplyIfFiniteState
from jopt.transforms._wrappers import MultiSteps as MultiSteps
from jopt.transforms._wrappers import MultiStepsState as MultiStepsState
from jopt.transforms._wrappers import (
  ShouldSkipUpdateFunction as ShouldSkipUpdateFunction,
)
from jopt.transforms._wrappers import apply_if_finite as apply_if_finite
from jopt.transforms._wrappers import skip_not_finite as skip_not_finite
from jopt.transforms._plateau import EarlyStopping as EarlyStopping
from jopt.transforms._plateau import EarlyStoppingState as EarlyStoppingState
from jopt.transforms._plateau import (
  ReduceLROnPlateauState as ReduceLROnPlateauState,
)
from jopt.transforms._plateau import early_stopping as early_stopping
from jopt.transforms._plateau import reduce_on_plateau as reduce_on_plateau

# Optimizers: aliases over the transforms, with Optax's names and defaults.
from jopt.optimizers._alias import sgd as sgd
from jopt.optimizers._alias import adagrad as adagrad
from jopt.optimizers._alias import lion as lion
from jopt.optimizers._alias import rmsprop as rmsprop
from jopt.optimizers._alias_adam import adam as adam
from jopt.optimizers._alias_adam import adamax as adamax
from jopt.optimizers._alias_adam import adamw as adamw
from jopt.optimizers._alias_adam import amsgrad as amsgrad
from jopt.optimizers._alias_adam import nadam as nadam

# Schedules, and batch-size schedules.
from jopt.schedules._schedules import constant_schedule as constant_schedule
from jopt.schedules._schedules import (
  cosine_decay_schedule as cosine_decay_schedule,
)
from jopt.schedules._schedules import exponential_decay as exponential_decay
from jopt.schedules._schedules import join_schedules as join_schedules
from jopt.schedules._schedules import linear_schedule as linear_schedule
from jopt.schedules._schedules import (
  piecewise_constant_schedule as piecewise_constant_schedule,
)
from jopt.schedules._schedules import polynomial_schedule as polynomial_schedule
from jopt.schedules._schedules import (
  warmup_cosine_decay_schedule as warmup_cosine_decay_schedule,
)
from jopt.schedules._schedules_cyclic import (
  cosine_onecycle_schedule as cosine_onecycle_schedule,
)
from jopt.schedules._schedules_cyclic import (
  linear_onecycle_schedule as linear_onecycle_schedule,
)
from jopt.schedules._schedules_cyclic import sgdr_schedule as sgdr_schedule
from jopt.schedules._batch_size import (
  exponential_batch_size_schedule as exponential_batch_size_schedule,
)
from jopt.schedules._batch_size import masked_mean as masked_mean
from jopt.schedules._batch_size import (
  polynomial_batch_size_schedule as polynomial_batch_size_schedule,
)
from jopt.schedules._batch_size import sample_batch as sample_batch

# Contrib: learning-rate-free, schedule-free and hypergradient optimizers.
from jopt.contrib._dadapt import DAdaptAdamWState as DAdaptAdamWState
from jopt.contrib._dadapt import ProdigyState as ProdigyState
from jopt.contrib._dadapt import dadapt_adamw as dadapt_adamw
from jopt.contrib._dadapt import prodigy as prodigy
from jopt.contrib._dog import DoGState as DoGState
from jopt.contrib._dog import dog as dog
from jopt.contrib._dog import scale_by_dog as scale_by_dog
from jopt.contrib._mechanic import MechanicState as MechanicState
from jopt.contrib._mechanic import mechanize as mechanize
from jopt.contrib._schedule_free import ScheduleFreeState as ScheduleFreeState
from jopt.contrib._schedule_free import schedule_free as schedule_free
from jopt.contrib._schedule_free import (
  schedule_free_adamw as schedule_free_adamw,
)
from jopt.contrib._schedule_free import (
  schedule_free_eval_params as schedule_free_eval_params,
)
from jopt.contrib._schedule_free import schedule_free_sgd as schedule_free_sgd
from jopt.contrib._hypergradient import (
  ScaleByHypergradientState as ScaleByHypergradientState,
)
from jopt.contrib._hypergradient import adam_hd as adam_hd
from jopt.contrib._hypergradient import sgd_hd as sgd_hd

# Sweeps: a subpackage, imported here so that `jopt.sweep.run` works after a
# plain `import jopt` (it imports nothing heavy until a plot is asked for).
from jopt import sweep as sweep

__version__ = "0.1.0"

__all__ = [
  "EmptyState",
  "GradientTransformation",
  "apply_updates",
  "identity",
  "chain",
  "HyperparamsState",
  "get_hyperparams",
  "set_hyperparams",
  "use_cpu_devices",
  "ScaleByScheduleState",
  "TraceState",
  "scale",
  "scale_by_learning_rate",
  "scale_by_schedule",
  "trace",
  "ScaleByAdamState",
  "ScaleByAmsgradState",
  "scale_by_adam",
  "scale_by_adamax",
  "scale_by_amsgrad",
  "ScaleByLionState",
  "ScaleByRmsState",
  "ScaleByRssState",
  "scale_by_lion",
  "scale_by_rms",
  "scale_by_rss",
  "add_decayed_weights",
  "add_l1",
  "clip",
  "clip_by_global_norm",
  "MaskedNode",
  "MaskedState",
  "PartitionState",
  "masked",
  "partition",
  "ApplyIfFiniteState",
  "MultiSteps",
  "MultiStepsState",
  "ShouldSkipUpdateFunction",
  "apply_if_finite",
  "skip_not_finite",
  "EarlyStopping",
  "EarlyStoppingState",
  "ReduceLROnPlateauState",
  "early_stopping",
  "reduce_on_plateau",
  "sgd",
  "adagrad",
  "lion",
  "rmsprop",
  "adam",
  "adamax",
  "adamw",
  "amsgrad",
  "nadam",
  "constant_schedule",
  "cosine_decay_schedule",
  "exponential_decay",
  "join_schedules",
  "linear_schedule",
  "piecewise_constant_schedule",
  "polynomial_schedule",
  "warmup_cosine_decay_schedule",
  "cosine_onecycle_schedule",
  "linear_onecycle_schedule",
  "sgdr_schedule",
  "exponential_batch_size_schedule",
  "masked_mean",
  "polynomial_batch_size_schedule",
  "sample_batch",
  "DAdaptAdamWState",
  "ProdigyState",
  "dadapt_adamw",
  "prodigy",
  "DoGState",
  "dog",
  "scale_by_dog",
  "MechanicState",
  "mechanize",
  "ScheduleFreeState",
  "schedule_free",
  "schedule_free_adamw",
  "schedule_free_eval_params",
  "schedule_free_sgd",
  "ScaleByHypergradientState",
  "adam_hd",
  "sgd_hd",
  "sweep",
]
