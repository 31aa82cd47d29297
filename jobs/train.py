"""Ray job: train the two-tower model with Ray Train on the cluster the job runs on.

    ray job submit --working-dir . -- python jobs/train.py --run s3://BUCKET/runs/ml-100k --workers 2

RUN/data must exist (``scaleout prepare --run s3://...``); workers fetch their shards from the store. The
job writes RUN/model and RUN/metrics as ``scaleout train --backend ray`` does.
"""

import argparse
import json
import sys

import scaleout  # noqa: F401  (Keras 2 before TensorFlow)
from scaleout.cli.ending import reported
from scaleout.cli.options import add_train_args, configs_from_args, no_evaluate_arg
from scaleout.errors import stop_on_sigterm
from scaleout.pipeline import connect_ray
from scaleout.rundir import opened
from scaleout.train.run import train_run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run directory holding data/: s3://BUCKET/PREFIX (or gs://) on a cluster, or a path every node mounts")
    add_train_args(parser, backend=False)
    no_evaluate_arg(parser)
    args = parser.parse_args()

    def work() -> None:
        model_cfg, train_cfg = configs_from_args(args, backend="ray")
        connect_ray(args.address)
        with stop_on_sigterm("jobs/train.py"), opened(args.run, "jobs/train.py") as run:
            metrics = train_run(run, model_cfg, train_cfg, evaluate_test=not args.no_evaluate)
        print(json.dumps(metrics, indent=2, sort_keys=True))

    return reported("jobs/train.py", work, args.run, resumable=True)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main())
