"""jopt: composable JAX optimizers whose hyperparameters can be swept.

Every numeric hyperparameter lives in the optimizer state, so a jitted train
step never recompiles when one changes and a whole sweep is one vmapped
program. The API follows Optax: ``init``/``update`` gradient transformations,
chained from small building blocks.
"""

# Core protocol and composition.
from jopt._base import EmptyState as EmptyState
from jopt._base import GradientTransformation as GradientTransformation
from jopt._base import apply_updates as apply_updates
from jopt._base import identity as identity
from jopt._combine import chain as chain
from jopt._cpu_devices import use_cpu_devices as use_cpu_devices

# Hyperparameters in the state.
from jopt._hyperparams import HyperparamsState as HyperparamsState
from jopt._hyperparams import get_hyperparams as get_hyperparams
from jopt._hyperparams import set_hyperparams as set_hyperparams

# Scaling and momentum.
from jopt._scale import ScaleByScheduleState as ScaleByScheduleState
from jopt._scale import TraceState as TraceState
from jopt._scale import scale as scale
from jopt._scale import scale_by_learning_rate as scale_by_learning_rate
from jopt._scale import scale_by_schedule as scale_by_schedule
from jopt._scale import trace as trace

# Optimizers.
from jopt._alias import sgd as sgd

# Adaptive transforms, regularizers and optimizers.
from jopt._adam import ScaleByAdamState as ScaleByAdamState
from jopt._adam import ScaleByAmsgradState as ScaleByAmsgradState
from jopt._adam import scale_by_adam as scale_by_adam
from jopt._adam import scale_by_adamax as scale_by_adamax
from jopt._adam import scale_by_amsgrad as scale_by_amsgrad
from jopt._adaptive import ScaleByLionState as ScaleByLionState
from jopt._adaptive import ScaleByRmsState as ScaleByRmsState
from jopt._adaptive import ScaleByRssState as ScaleByRssState
from jopt._adaptive import scale_by_lion as scale_by_lion
from jopt._adaptive import scale_by_rms as scale_by_rms
from jopt._adaptive import scale_by_rss as scale_by_rss
from jopt._alias import adagrad as adagrad
from jopt._alias import lion as lion
from jopt._alias import rmsprop as rmsprop
from jopt._alias_adam import adam as adam
from jopt._alias_adam import adamax as adamax
from jopt._alias_adam import adamw as adamw
from jopt._alias_adam import amsgrad as amsgrad
from jopt._alias_adam import nadam as nadam
from jopt._regularize import add_decayed_weights as add_decayed_weights
from jopt._regularize import add_l1 as add_l1

# Clipping, masking, partition, apply_if_finite, MultiSteps.
from jopt._clipping import clip as clip
from jopt._clipping import clip_by_global_norm as clip_by_global_norm
from jopt._masking import MaskedNode as MaskedNode
from jopt._masking import MaskedState as MaskedState
from jopt._masking import PartitionState as PartitionState
from jopt._masking import masked as masked
from jopt._masking import partition as partition
from jopt._wrappers import ApplyIfFiniteState as ApplyIfFiniteState
from jopt._wrappers import MultiSteps as MultiSteps
from jopt._wrappers import MultiStepsState as MultiStepsState
from jopt._wrappers import ShouldSkipUpdateFunction as ShouldSkipUpdateFunction
from jopt._wrappers import apply_if_finite as apply_if_finite
from jopt._wrappers import skip_not_finite as skip_not_finite

# Schedules, batch-size schedules, plateau, early stopping.
from jopt._batch_size import exponential_batch_size_schedule as exponential_batch_size_schedule
from jopt._batch_size import masked_mean as masked_mean
from jopt._batch_size import polynomial_batch_size_schedule as polynomial_batch_size_schedule
from jopt._batch_size import sample_batch as sample_batch
from jopt._plateau import EarlyStopping as EarlyStopping
from jopt._plateau import EarlyStoppingState as EarlyStoppingState
from jopt._plateau import ReduceLROnPlateauState as ReduceLROnPlateauState
from jopt._plateau import early_stopping as early_stopping
from jopt._plateau import reduce_on_plateau as reduce_on_plateau
from jopt._schedules import constant_schedule as constant_schedule
from jopt._schedules import cosine_decay_schedule as cosine_decay_schedule
from jopt._schedules import exponential_decay as exponential_decay
from jopt._schedules import join_schedules as join_schedules
from jopt._schedules import linear_schedule as linear_schedule
from jopt._schedules import piecewise_constant_schedule as piecewise_constant_schedule
from jopt._schedules import polynomial_schedule as polynomial_schedule
from jopt._schedules import warmup_cosine_decay_schedule as warmup_cosine_decay_schedule
from jopt._schedules_cyclic import cosine_onecycle_schedule as cosine_onecycle_schedule
from jopt._schedules_cyclic import linear_onecycle_schedule as linear_onecycle_schedule
from jopt._schedules_cyclic import sgdr_schedule as sgdr_schedule

# Learning-rate-free, schedule-free and hypergradient optimizers.
from jopt._dadapt import DAdaptAdamWState as DAdaptAdamWState
from jopt._dadapt import ProdigyState as ProdigyState
from jopt._dadapt import dadapt_adamw as dadapt_adamw
from jopt._dadapt import prodigy as prodigy
from jopt._dog import DoGState as DoGState
from jopt._dog import dog as dog
from jopt._dog import scale_by_dog as scale_by_dog
from jopt._hypergradient import ScaleByHypergradientState as ScaleByHypergradientState
from jopt._hypergradient import adam_hd as adam_hd
from jopt._hypergradient import sgd_hd as sgd_hd
from jopt._mechanic import MechanicState as MechanicState
from jopt._mechanic import mechanize as mechanize
from jopt._schedule_free import ScheduleFreeState as ScheduleFreeState
from jopt._schedule_free import schedule_free as schedule_free
from jopt._schedule_free import schedule_free_adamw as schedule_free_adamw
from jopt._schedule_free import schedule_free_eval_params as schedule_free_eval_params
from jopt._schedule_free import schedule_free_sgd as schedule_free_sgd

# Sweeps: a subpackage, imported here so that `jopt.sweep.run` works after a
# plain `import jopt` (it imports nothing heavy until a plot is asked for).
from jopt import sweep as sweep

__version__ = "0.1.0"

__all__ = [
    "ApplyIfFiniteState",
    "EarlyStopping",
    "EarlyStoppingState",
    "EmptyState",
    "GradientTransformation",
    "HyperparamsState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "PartitionState",
    "ReduceLROnPlateauState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ShouldSkipUpdateFunction",
    "TraceState",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "add_l1",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "early_stopping",
    "exponential_batch_size_schedule",
    "exponential_decay",
    "get_hyperparams",
    "identity",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "lion",
    "masked",
    "masked_mean",
    "nadam",
    "partition",
    "piecewise_constant_schedule",
    "polynomial_batch_size_schedule",
    "polynomial_schedule",
    "reduce_on_plateau",
    "rmsprop",
    "sample_batch",
    "scale",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "set_hyperparams",
    "sgd",
    "sweep",
    "sgdr_schedule",
    "skip_not_finite",
    "trace",
    "use_cpu_devices",
    "warmup_cosine_decay_schedule",
    # Learning-rate-free, schedule-free and hypergradient optimizers.
    "DAdaptAdamWState",
    "ProdigyState",
    "dadapt_adamw",
    "prodigy",
    "DoGState",
    "dog",
    "scale_by_dog",
    "ScaleByHypergradientState",
    "adam_hd",
    "sgd_hd",
    "MechanicState",
    "mechanize",
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
]
