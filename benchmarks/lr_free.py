"""Do I need to sweep? Learning-rate-free optimizers against a tuned AdamW.

One `jopt.sweep.run` per task trains every arm of the race over several
seeds, in one compile: the arms are a tuned-AdamW learning-rate grid (its
U-curve) and each learning-rate-free, schedule-free or hypergradient method
at its default settings. The arm is a categorical choice, passed to the
training function as an int index: the gradient is computed once per step
and ``lax.switch`` picks the optimizer update (each trial carries the state
of every optimizer; only its own moves). Seeds are paired: seed ``s`` gives
every arm the same initial params and the same minibatches.

Tasks: the CNN of ``examples/cnn`` on scikit-learn's digits (minibatch
cross-entropy; the reported loss is on the validation split) and the MLP of
``examples/regression`` on diabetes (full-batch MSE of the standardised
target; validation split). Schedule-free arms are evaluated at
`jopt.schedule_free_eval_params`.

    python benchmarks/lr_free.py            # the full race (CPU: minutes)
    python benchmarks/lr_free.py --quick    # a smoke run
    python benchmarks/lr_free.py --tasks mlp_diabetes --seeds 9

Prints, per task and arm, the median final validation loss over seeds with
its interquartile range and min-max, each method's ratio to the best tuned
AdamW median, and the number of compiles; writes ``summary.json`` and
``lr_free.png`` to ``--out`` (default ``out/lr_free``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jopt
from jopt import sweep

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "cnn"))
sys.path.insert(0, str(ROOT / "examples" / "regression"))

import data as cnn_data  # noqa: E402
import diabetes  # noqa: E402
import model as cnn_model  # noqa: E402

# Each learning-rate-free arm at its defaults (Optax's, or the paper's for
# the hypergradient methods Optax lacks). Mechanic wraps Adam at learning
# rate 1, as its paper and Optax's docstring suggest.
METHODS = {
  "schedule_free_adamw": lambda: jopt.schedule_free_adamw(),
  "schedule_free_sgd": lambda: jopt.schedule_free_sgd(),
  "prodigy": lambda: jopt.prodigy(),
  "dadapt_adamw": lambda: jopt.dadapt_adamw(),
  "dog": lambda: jopt.dog(),
  "mechanize_adam": lambda: jopt.mechanize(jopt.adam(1.0)),
  "sgd_hd": lambda: jopt.sgd_hd(),
  "adam_hd": lambda: jopt.adam_hd(),
}
SCHEDULE_FREE = ("schedule_free_adamw", "schedule_free_sgd")


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  steps: int
  lrs: tuple[float, ...]  # the AdamW grid
  batch_size: int | None  # None: full batch


def default_tasks(quick: bool) -> list[Task]:
  if quick:
    return [
      Task("cnn_digits", 10, (1e-3, 1e-2), 32),
      Task("mlp_diabetes", 10, (1e-3, 1e-2), None),
    ]
  return [
    Task("cnn_digits", 300, tuple(np.logspace(-4, -0.5, 8).tolist()), 64),
    Task("mlp_diabetes", 500, tuple(np.logspace(-4, 0, 9).tolist()), None),
  ]


def load(task: Task):
  """``(net, init(key), loss(params, x, y), train (x, y), val (x, y))``."""
  if task.name == "cnn_digits":
    splits = cnn_data.load_splits(seed=0)
    # The example's NNX model, used functionally: its parameters are the
    # pytree the optimizers see; graph and the rest of its state are fixed.
    template = cnn_model.CNN(
      features=(8, 16), dropout_rate=0.0, rngs=nnx.Rngs(0)
    )
    graphdef, _, rest = nnx.split(template, nnx.Param, ...)
    train = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
    val = jnp.asarray(splits.x_val), jnp.asarray(splits.y_val)

    def loss(params, x, y):
      model = nnx.merge(graphdef, params, rest)
      return cnn_model.cross_entropy(model(x), y)

    def init(key):
      # A fresh model in the trace (NNX variables are not shared across
      # traces), its parameters drawn from `key` as the example does.
      model = cnn_model.CNN(
        features=(8, 16), dropout_rate=0.0, rngs=nnx.Rngs(0)
      )
      cnn_model.init_params(model, key)
      return nnx.state(model, nnx.Param)

    return init, loss, train, val
  data = diabetes.load_data(seed=0)
  train = data["x_train"], data["y_train"]
  val = data["x_val"], data["y_val"]
  in_features = train[0].shape[-1]
  template = diabetes.MLP(in_features, (32,), rngs=nnx.Rngs(0))
  graphdef, _, rest = nnx.split(template, nnx.Param, ...)

  def loss(params, x, y):
    model = nnx.merge(graphdef, params, rest)
    return jnp.mean((model(x) - y) ** 2)

  def init(key):
    model = diabetes.MLP(in_features, (32,), rngs=nnx.Rngs(params=key))
    return nnx.state(model, nnx.Param)

  return init, loss, train, val


def arms(task: Task) -> list[str]:
  return [f"adamw lr={lr:.2g}" for lr in task.lrs] + list(METHODS)


def make_train_fn(task: Task):
  """``train_fn(hparams, key)``: hparams ``arm`` (an index) and ``seed``."""
  init, loss, (x_train, y_train), (x_val, y_val) = load(task)
  names = arms(task)
  num_adamw = len(task.lrs)
  # Arm -> optimizer branch (0 is AdamW) and AdamW learning rate.
  branch_of_arm = jnp.asarray(
    [0] * num_adamw + list(range(1, len(METHODS) + 1)), jnp.int32
  )
  lr_of_arm = jnp.asarray(
    list(task.lrs) + [task.lrs[0]] * len(METHODS), jnp.float32
  )
  sf_branches = [1 + list(METHODS).index(m) for m in SCHEDULE_FREE]
  num_train = x_train.shape[0]
  assert len(names) == branch_of_arm.shape[0]

  def train_fn(hparams, key):
    del key  # seeds are paired across arms: the key comes from the seed
    seed_key = jax.random.fold_in(jax.random.key(0), hparams["seed"])
    init_key, data_key = jax.random.split(seed_key)
    branch = branch_of_arm[hparams["arm"]]
    txs = [jopt.adamw(lr_of_arm[hparams["arm"]])]
    txs += [make() for make in METHODS.values()]
    params = init(init_key)
    states = tuple(tx.init(params) for tx in txs)

    def step(carry, step_key):
      params, states = carry
      if task.batch_size is None:
        x, y = x_train, y_train
      else:
        idx = jax.random.randint(step_key, (task.batch_size,), 0, num_train)
        x, y = x_train[idx], y_train[idx]
      value, grads = jax.value_and_grad(loss)(params, x, y)

      def branch_fn(i):
        def update(states):
          updates, new = txs[i].update(grads, states[i], params)
          return updates, states[:i] + (new,) + states[i + 1 :]

        return update

      updates, states = jax.lax.switch(
        branch, [branch_fn(i) for i in range(len(txs))], states
      )
      return (jopt.apply_updates(params, updates), states), value

    (params, states), train_curve = jax.lax.scan(
      step, (params, states), jax.random.split(data_key, task.steps)
    )

    def sf_eval(i):
      return lambda: jopt.schedule_free_eval_params(states[i], params)

    is_sf = jnp.isin(branch, jnp.asarray(sf_branches, jnp.int32))
    eval_params = jax.lax.cond(
      is_sf,
      lambda: jax.lax.switch(
        jnp.argmax(jnp.asarray(sf_branches) == branch),
        [sf_eval(i) for i in sf_branches],
      ),
      lambda: params,
    )
    return {
      "val_loss": loss(eval_params, x_val, y_val),
      "final_train_loss": loss(eval_params, x_train, y_train),
      "train_loss": train_curve,
    }

  return train_fn


def race(task: Task, num_seeds: int, progress: bool):
  train_fn = make_train_fn(task)
  space = {
    "arm": sweep.choice(arms(task)),
    "seed": sweep.choice(list(range(num_seeds))),
  }
  start = time.perf_counter()
  result = sweep.run(
    train_fn,
    space,
    key=jax.random.key(0),
    strategy="grid",
    progress=progress,
  )
  seconds = time.perf_counter() - start
  return result, seconds


def summarise(task: Task, result) -> dict:
  """Median, IQR and range of the final validation loss per arm."""
  arm = np.asarray(result.hparams["arm"])
  loss = np.asarray(result.metrics["val_loss"], np.float64)
  train = np.asarray(result.metrics["final_train_loss"], np.float64)
  rows = {}
  for name in arms(task):
    values = loss[arm == name]
    finite = values[np.isfinite(values)]
    train_finite = train[arm == name][np.isfinite(train[arm == name])]
    q = np.percentile(finite, [25, 50, 75]) if finite.size else [np.nan] * 3
    rows[name] = {
      "median": float(q[1]),
      "q25": float(q[0]),
      "q75": float(q[2]),
      "min": float(np.min(finite)) if finite.size else float("nan"),
      "max": float(np.max(finite)) if finite.size else float("nan"),
      "diverged": int(np.sum(~np.isfinite(values))),
      "seeds": [float(v) for v in values],
      "train_median": (
        float(np.median(train_finite)) if train_finite.size else float("nan")
      ),
    }
  adamw = {k: v for k, v in rows.items() if k.startswith("adamw")}
  best = min(adamw, key=lambda k: adamw[k]["median"])
  return {
    "arms": rows,
    "best_adamw": best,
    "best_adamw_median": rows[best]["median"],
  }


def print_table(task: Task, summary: dict, seconds: float, result) -> None:
  best = summary["best_adamw_median"]
  print(
    f"\n== {task.name}: {task.steps} steps, "
    f"{'full batch' if task.batch_size is None else task.batch_size}, "
    f"{len(result.metrics['val_loss'])} trials in {seconds:.1f} s, "
    f"{result.num_compiles} compile(s) ({result.compile_time:.1f} s) =="
  )
  print(
    "validation loss over seeds (median, IQR, min-max, median / best "
    "tuned AdamW median), diverged seeds, and the median final training "
    "loss"
  )
  print(
    f"{'arm':24s} {'median':>9s} {'IQR':>19s} {'min-max':>19s} "
    f"{'/ best':>7s} {'NaN':>4s} {'train':>8s}"
  )
  for name, row in summary["arms"].items():
    mark = " *" if name == summary["best_adamw"] else ""
    print(
      f"{name:24s} {row['median']:9.4f} "
      f"[{row['q25']:7.4f}, {row['q75']:7.4f}] "
      f"[{row['min']:7.4f}, {row['max']:7.4f}] "
      f"{row['median'] / best:7.2f} {row['diverged']:4d} "
      f"{row['train_median']:8.4f}{mark}"
    )


def plot(tasks, summaries, path: Path) -> None:
  from matplotlib.figure import Figure  # noqa: PLC0415

  fig = Figure(figsize=(12, 4.5 * len(tasks)))
  axes = fig.subplots(len(tasks), 2, squeeze=False)
  for (left, right), task, summary in zip(axes, tasks, summaries, strict=True):
    rows = summary["arms"]
    adamw = [rows[a] for a in arms(task) if a.startswith("adamw")]
    lrs = np.asarray(task.lrs)
    med = np.asarray([r["median"] for r in adamw])
    left.plot(lrs, med, "o-", color="k", label="AdamW (median)")
    left.fill_between(
      lrs,
      [r["q25"] for r in adamw],
      [r["q75"] for r in adamw],
      color="k",
      alpha=0.15,
      label="AdamW IQR",
    )
    colors = [f"C{i}" for i in range(len(METHODS))]
    for method, color in zip(METHODS, colors, strict=True):
      left.axhline(
        rows[method]["median"], color=color, ls="--", lw=1, label=method
      )
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("AdamW learning rate")
    left.set_ylabel("final validation loss")
    left.set_title(f"{task.name}: the tuned sweep's U-curve")
    left.legend(fontsize=7)
    best = rows[summary["best_adamw"]]
    right.axhspan(best["q25"], best["q75"], color="k", alpha=0.15)
    right.axhline(
      best["median"], color="k", label=f"tuned AdamW ({summary['best_adamw']})"
    )
    for i, (method, color) in enumerate(zip(METHODS, colors, strict=True)):
      row = rows[method]
      seeds = np.asarray(row["seeds"])
      if row["diverged"]:
        right.annotate(
          f"{row['diverged']} diverged",
          (i, best["median"]),
          ha="center",
          va="bottom",
          fontsize=7,
          color=color,
          rotation=90,
        )
      right.scatter(
        np.full(seeds.shape, i), seeds, color=color, s=12, alpha=0.6
      )
      right.errorbar(
        i,
        row["median"],
        yerr=[[row["median"] - row["q25"]], [row["q75"] - row["median"]]],
        fmt="o",
        color=color,
        capsize=4,
      )
    right.set_xticks(
      range(len(METHODS)), list(METHODS), rotation=30, ha="right", fontsize=8
    )
    right.set_yscale("log")
    right.set_ylabel("final validation loss (each seed, median, IQR)")
    right.set_title(f"{task.name}: each method at its defaults")
    right.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
  jopt.use_cpu_devices()  # one CPU device per core: trials shard over them
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--quick", action="store_true", help="a smoke run: few steps, two seeds"
  )
  parser.add_argument(
    "--seeds",
    type=int,
    default=None,
    help="seeds per arm (default 5; 2 with --quick)",
  )
  parser.add_argument(
    "--tasks",
    nargs="+",
    default=None,
    choices=["cnn_digits", "mlp_diabetes"],
    help="which tasks to race (default: both)",
  )
  parser.add_argument("--out", default=str(ROOT / "out" / "lr_free"))
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  num_seeds = args.seeds or (2 if args.quick else 5)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  tasks = [
    t
    for t in default_tasks(args.quick)
    if args.tasks is None or t.name in args.tasks
  ]
  print(
    f"jax {jax.__version__}, {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s), {num_seeds} seeds per arm"
  )
  total = time.perf_counter()
  summaries, report = [], {}
  for task in tasks:
    result, seconds = race(task, num_seeds, progress=not args.no_progress)
    summary = summarise(task, result)
    print_table(task, summary, seconds, result)
    summaries.append(summary)
    report[task.name] = {
      **summary,
      "steps": task.steps,
      "batch_size": task.batch_size,
      "seconds": seconds,
      "num_compiles": result.num_compiles,
      "compile_time": result.compile_time,
    }
  plot(tasks, summaries, out / "lr_free.png")
  report["total_seconds"] = time.perf_counter() - total
  report["num_seeds"] = num_seeds
  (out / "summary.json").write_text(json.dumps(report, indent=2))
  print(
    f"\ntotal {report['total_seconds']:.1f} s; wrote {out / 'lr_free.png'}"
    f" and {out / 'summary.json'}"
  )
  return report


if __name__ == "__main__":
  main()
