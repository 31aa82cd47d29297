"""Ray job: embed every candidate in parallel with Ray Data, build the indexes, evaluate through them, export.

    ray job submit --working-dir . -- python jobs/embed_index.py --run s3://BUCKET/runs/ml-100k --workers 2 \\
        --export brute_force scann

RUN/model must exist (``scaleout train``); actors read it and the candidates from the store. The
job writes RUN/embeddings, RUN/index/*, RUN/metrics/index_eval.json,
RUN/export/* and RUN/artifacts.json as ``scaleout index --backend ray`` does.
Started again after a failure, it keeps the embedding parts already written.
"""

import argparse
import json
import sys

import scaleout  # noqa: F401  (Keras 2 before TensorFlow)
from scaleout.cli.ending import reported
from scaleout.cli.options import index_args, index_job_config
from scaleout.errors import stop_on_sigterm
from scaleout.pipeline import connect_ray, index_job
from scaleout.rundir import opened


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run directory holding model/: s3://BUCKET/PREFIX (or gs://) on a cluster, or a path every node mounts")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: the job's cluster)")
    index_args(parser)
    args = parser.parse_args()

    def work() -> None:
        cfg = index_job_config(args, "ray")
        connect_ray(args.address)
        with stop_on_sigterm("jobs/embed_index.py"), opened(args.run, "jobs/embed_index.py") as run:
            summary = index_job(run, cfg)
        print(json.dumps(summary, indent=2, sort_keys=True))

    return reported("jobs/embed_index.py", work, args.run)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    sys.exit(main())
