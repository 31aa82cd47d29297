"""Ray Train's failure in one line (scaleout.train.ray_failures): built from Ray's own exception types, as
``trainer.fit()`` raises them; the killed worker's case runs on a real cluster in tests/test_ray_cluster.py."""

from ray.train.v2._internal.exceptions import UserExceptionWithTraceback
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

from scaleout.errors import DataError
from scaleout.train.ray_failures import summary
from scaleout.train.ring import RingError

TRACEBACK = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"


def test_each_failed_worker_gets_one_clause_in_rank_order():
    ours = UserExceptionWithTraceback(DataError("gs://b/run/data/train/part-00001.parquet: no such file"),
                                      TRACEBACK + "DataError: ...")
    theirs = UserExceptionWithTraceback(
        RuntimeError("{{function_node __wrapped__CollectiveReduceV2}} Collective ops is aborted by: reset\n"
                     "Additional GRPC error information from remote target"), TRACEBACK + "RuntimeError: ...")
    error = WorkerGroupError("[Rank 0 Error Snippet]:\n" + TRACEBACK + "\n[Rank 1 Error Snippet]:\n" + TRACEBACK,
                             {1: theirs, 0: ours})
    assert "\n" in str(error)
    assert summary(error) == ("worker 0: gs://b/run/data/train/part-00001.parquet: no such file; "
                              "worker 1: RuntimeError: Collective ops is aborted by: reset")


def test_the_controllers_error_and_any_other_by_its_first_line():
    assert summary(ControllerError(ValueError("no placement\nfor 3 workers"))) == \
        "Ray Train's controller: ValueError: no placement"
    assert summary(TimeoutError("the group did not start\nwithin 600 s")) == "TimeoutError: the group did not start"


def test_the_socket_rings_error_is_its_clause_after_the_worker():
    """The ring's RingError, as the worker raises it out of TensorFlow's wrapping (scaleout.train.ring.raised_as_is;
    tests/train/test_ring.py raises it through a step): its message names its own worker, the clause does not
    again."""
    said = ("worker 1: worker 0 closed its connection in the step's all-reduce: its process ended (killed, out of "
            "memory, or crashed)")
    error = WorkerGroupError("[Rank 1 Error Snippet]:\n" + TRACEBACK,
                             {1: UserExceptionWithTraceback(RingError(said), TRACEBACK + "RingError: ...")})
    assert summary(error) == "worker 1: RingError: " + said.removeprefix("worker 1: ")

