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

# [helper-adaptive] adaptive transforms, regularizers and optimizers.

# [helper-wrappers] clipping, masking, partition, apply_if_finite, MultiSteps.

# [helper-schedules] schedules, batch-size schedules, plateau, early stopping.

__version__ = "0.1.0"

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "HyperparamsState",
    "ScaleByScheduleState",
    "TraceState",
    "apply_updates",
    "chain",
    "get_hyperparams",
    "identity",
    "scale",
    "scale_by_learning_rate",
    "scale_by_schedule",
    "set_hyperparams",
    "sgd",
    "trace",
]
