"""How a benchmark script ends on bad input or Ctrl-C: one line naming what was wrong and a status, as the scaleout
command and the jobs end (scaleout.cli.ending.ended), not a traceback."""

import os
import subprocess
import sys

import pytest

from benchscripts import BENCHMARKS
from conftest import ctrl_c_at


def bench(*args, tmp_path):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=BENCHMARKS.parent, env={**os.environ, "TMPDIR": str(tmp_path)})


@pytest.mark.parametrize("args, said", [
    (("quality_preset.py", "--movielens", "{tmp}/nowhere"), "{tmp}/nowhere: no such file or directory"),
    (("quality_preset.py", "--preset", "nosuch"),
     "unknown preset 'nosuch'; expected one of tutorial, quality, history"),
    (("quality_preset.py", "--l2", "-1"), "l2 must be 0 or more, got -1.0"),
    (("held_out_users.py", "--movielens", "{tmp}"), "{tmp}/u.data not found."),
])
def test_bad_input_ends_a_benchmark_in_one_line_with_status_1(args, said, tmp_path):
    script, *rest = args
    done = bench(f"benchmarks/{script}", *(a.format(tmp=tmp_path) for a in rest), tmp_path=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == f"benchmarks/{script}: error: {said.format(tmp=tmp_path)}"


def test_ctrl_c_ends_a_benchmark_in_one_line_with_status_130(tmp_path):
    # quality_preset prepares MovieLens 100K, then trains (about 10 s here): Ctrl-C once training has begun
    done = subprocess.Popen([sys.executable, "benchmarks/quality_preset.py", "--out", str(tmp_path)],
                            stderr=subprocess.PIPE, text=True, cwd=BENCHMARKS.parent,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    said, rest, status = ctrl_c_at(done, "epoch 1/")
    assert status == 130 and "Traceback" not in rest, said[-2000:] + rest[:3000] + "\n...\n" + rest[-3000:]
    assert rest.splitlines()[-1].startswith("benchmarks/quality_preset.py: interrupted;"), rest[-3000:]
    assert not list(tmp_path.glob("*.json"))  # no results written
    assert not list(tmp_path.glob("tmp*"))  # its temporary directory (the prepared data, the run) removed


def test_every_benchmark_ends_through_ended():
    # the two tests above run two scripts; every other one must end the same way
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert len(scripts) > 30
    ending = {p.name: p.read_text().split('if __name__ == "__main__":')[-1] for p in scripts}
    others = [name for name, text in ending.items() if "ended(main)\n" not in text]
    assert others == []
