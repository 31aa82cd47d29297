"""Local training throughput, with training-time FactorizedTopK off and on, and the default preset, in one run.

    python benchmarks/train_throughput.py --movielens ../shared/data/ml-100k

Prepares MovieLens 100K (the tutorial's split), then fits the tutorial's model
(3 epochs, batch 8192, Adagrad 0.1) twice on the same shards: once with
training metrics off (scaleout's default) and once on (the tutorial as
written). Then the default preset (`quality`, batch 1024, 10 epochs) with 1 and
with 8 training steps per tf.function call, and with 8 but the in-batch loss
computed by `tfrs.tasks.Retrieval` as before issue 15 (scaleout's own
`in_batch_softmax` now: the same loss without the B x B label matrix), and
with 8 but the logits' gradient as TensorFlow's MatMul gradient computes it,
as before `dot_scores` (scaleout/train/logits.py). Last, the default preset on synthetic
data of MovieLens 20M's shape (138,493 users, 26,744 items; --scale-interactions
rows), 3 epochs, with the L2 penalty on the rows each batch touches (today) and
on whole tables (before issue 15, reproduced here by replacing the model's
penalty), side by side. Prints examples/s and fit time side by side and writes
the figures to benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import scaleout
from scaleout.config import DataConfig, ModelConfig, TrainConfig
from scaleout.data.prepare import prepare
from scaleout.train.presets import configs

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", default=os.environ.get("SCALEOUT_MOVIELENS_DIR", "../shared/data/ml-100k"))
    parser.add_argument("--epochs", type=int, default=3, help="2 or more: the steady figures are of epochs 2+")
    parser.add_argument("--scale-interactions", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error(f"--epochs must be 2 or more (the first epoch traces the graph), got {args.epochs}")

    from scaleout.train.local import evaluate, fit  # imports TensorFlow
    from scaleout.train.logits import tensorflow_gradient

    train_cfg = TrainConfig(epochs=args.epochs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = prepare(DataConfig(source="movielens", path=args.movielens), Path(tmp) / "data")
        for train_metrics in (False, True):
            model_cfg = ModelConfig(train_metrics=train_metrics)
            start = time.monotonic()
            model, history = fit(dataset, model_cfg, train_cfg)
            seconds = time.monotonic() - start
            metrics = evaluate(model, dataset, train_cfg)
            rows.append({
                "train_metrics": train_metrics,
                "fit_seconds": round(seconds, 2),
                "examples_per_second": round(dataset.counts["train"] * args.epochs / seconds, 1),
                # The first epoch includes tracing the graph; later ones show steady state.
                "steady_examples_per_second": round(sum(e["examples_per_second"] for e in history[1:]) /
                                                    max(1, len(history) - 1), 1),
                "test_top_100": round(metrics["factorized_top_k/top_100_categorical_accuracy"], 4),
            })
        preset_rows = []
        for steps, loss in ((1, "scaleout"), (8, "scaleout"), (8, "tfrs"), (8, "tensorflow's logits gradient")):
            model_cfg, preset_cfg = configs("quality", train={"steps_per_execution": steps})
            start = time.monotonic()
            plain = tensorflow_gradient() if loss == "tensorflow's logits gradient" else contextlib.nullcontext()
            with tfrs_loss(loss == "tfrs"), plain:
                model, history = fit(dataset, model_cfg, preset_cfg)
            seconds = time.monotonic() - start
            preset_rows.append({
                "steps_per_execution": steps, "loss": loss, "epochs": preset_cfg.epochs,
                "fit_seconds": round(seconds, 2),
                "examples_per_second_by_epoch": [e["examples_per_second"] for e in history],
                "steady_examples_per_second": round(sorted(e["examples_per_second"] for e in history[1:])[
                    (len(history) - 1) // 2], 1),  # median of epochs 2+
                "test_top_100": round(evaluate(model, dataset, preset_cfg)[
                    "factorized_top_k/top_100_categorical_accuracy"], 4)})
        shape = {"synthetic_users": 138_493, "synthetic_items": 26_744,
                 "synthetic_interactions": args.scale_interactions}
        big = prepare(DataConfig(source="synthetic", **shape), Path(tmp) / "ml20m-shape")
        l2_rows = []
        for penalty in ("touched rows", "whole tables"):
            model_cfg, preset_cfg = configs("quality", train={"epochs": 3})
            with whole_table_l2(penalty == "whole tables"):
                start = time.monotonic()
                model, history = fit(big, model_cfg, preset_cfg)
                seconds = time.monotonic() - start
            l2_rows.append({"l2_on": penalty, "epochs": 3, "fit_seconds": round(seconds, 2),
                            "examples_per_second_by_epoch": [e["examples_per_second"] for e in history],
                            "steady_examples_per_second": round(sorted(e["examples_per_second"] for e in history[1:])[
                                (len(history) - 1) // 2], 1),
                            "test_top_100": round(evaluate(model, big, preset_cfg)[
                                "factorized_top_k/top_100_categorical_accuracy"], 4)})
    off, on = rows
    print(f"\nlocal training, MovieLens 100K, {args.epochs} epochs, batch {train_cfg.batch_size}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(f"{'':28}{'metrics off':>14}{'metrics on':>14}{'on / off':>10}")
    for key, label in (("fit_seconds", f"time of {args.epochs} epochs (s)"), ("examples_per_second", "examples/s"),
                       ("steady_examples_per_second", "examples/s after epoch 1"), ("test_top_100", "test top-100")):
        print(f"{label:28}{off[key]:>14}{on[key]:>14}{on[key] / off[key]:>10.2f}")
    one, eight, before, matmul = preset_rows
    print(f"\ndefault preset (quality), batch 1024, {one['epochs']} epochs")
    print(f"{'':28}{'1 step/call':>14}{'8 steps/call':>14}{'8 / 1':>10}{'TFRS loss, 8':>16}{'8 / TFRS':>10}"
          f"{'TF gradient, 8':>16}{'8 / TF grad.':>14}")
    for key, label in (("fit_seconds", "fit time (s)"), ("steady_examples_per_second", "examples/s, median 2+"),
                       ("test_top_100", "test top-100")):
        print(f"{label:28}{one[key]:>14}{eight[key]:>14}{eight[key] / one[key]:>10.2f}{before[key]:>16}"
              f"{eight[key] / before[key]:>10.2f}{matmul[key]:>16}{eight[key] / matmul[key]:>14.2f}")
    touched, whole = l2_rows
    print(f"\ndefault preset on MovieLens 20M's shape ({big.counts['train']:,} train rows, "
          f"{big.counts['train_users']:,} users, {big.counts['candidates']:,} items), 3 epochs")
    print(f"{'':28}{'whole tables':>14}{'touched rows':>14}{'ratio':>10}")
    for key, label in (("fit_seconds", "fit time (s)"), ("steady_examples_per_second", "examples/s, median 2+"),
                       ("test_top_100", "test top-100")):
        print(f"{label:28}{whole[key]:>14}{touched[key]:>14}{touched[key] / whole[key]:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scaleout_version": scaleout.__version__, "cpus": os.cpu_count(),
                                    "epochs": args.epochs, "batch_size": train_cfg.batch_size,
                                    "runs": rows, "default_preset": preset_rows,
                                    "ml20m_shape": {"data": {**shape, **big.counts}, "l2": l2_rows}},
                                   indent=2) + "\n")
    print(f"written to {args.out}")


@contextlib.contextmanager
def tfrs_loss(on: bool):
    """While ``on``: the in-batch loss computed by ``tfrs.tasks.Retrieval`` (dense B x B labels and Keras'
    categorical cross-entropy), as before issue 15; otherwise scaleout's ``in_batch_softmax``."""
    from scaleout.tfenv import tfrs
    from scaleout.train import model as model_module

    original = model_module.in_batch_softmax

    def retrieval(query, candidate, temperature=1.0, candidate_sampling_probability=None, candidate_ids=None):
        task = tfrs.tasks.Retrieval(temperature=None if temperature == 1.0 else temperature,
                                    remove_accidental_hits=candidate_ids is not None)
        return task(query, candidate, compute_metrics=False, candidate_sampling_probability=candidate_sampling_probability,
                    candidate_ids=candidate_ids)

    if on:
        model_module.in_batch_softmax = retrieval
    try:
        yield
    finally:
        model_module.in_batch_softmax = original


@contextlib.contextmanager
def whole_table_l2(on: bool):
    """While ``on``: the model's L2 penalty on every row of every embedding table, each step, as it was before
    issue 15 (a dense gradient of each table); otherwise the model as it is."""
    from scaleout.tfenv import tf
    from scaleout.train.model import TwoTowerModel

    def with_whole_table_l2(self, gradients, variables):
        out, penalty = list(gradients), []
        for i, (g, v) in enumerate(zip(gradients, variables)):
            if g is None or "embeddings" not in v.name:
                continue
            if isinstance(g, tf.IndexedSlices):
                g = tf.math.unsorted_segment_sum(g.values, g.indices, v.shape[0])
            out[i] = g + 2.0 * self.cfg.l2 * v
            penalty.append(tf.reduce_sum(tf.square(v)))
        return out, self.cfg.l2 * tf.add_n(penalty)

    original = TwoTowerModel.with_row_l2
    if on:
        TwoTowerModel.with_row_l2 = with_whole_table_l2
    try:
        yield
    finally:
        TwoTowerModel.with_row_l2 = original


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
