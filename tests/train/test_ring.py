"""scaleout.train.ring: the step's all-reduce over a ring of TCP sockets. Each worker here is a thread with a
Ring of its own on this machine's loopback (real sockets); tests/test_ray_cluster.py trains through it on Ray
workers, one killed under it."""

import logging
import socket
import threading

import ml_dtypes
import numpy as np
import pytest

from scaleout.train.ring import HELLO, KEEPALIVE, MAGIC, Ring, RingError, chunks, decode_address, encode_address
from scaleout.train.ring import raised_as_is, read_slots, slots


def run_ring(world: int, body, timeout: float = 60.0) -> list:
    """``body(ring)`` on ``world`` connected rings, one thread each: each one's result (an exception if raised)."""
    rings = [Ring(rank, world, "127.0.0.1") for rank in range(world)]
    addresses, secret = read_slots(sum(slots(r) for r in rings))  # what join_ring's all-reduce gives each worker
    results: list = [None] * world

    def worker(rank):
        try:
            rings[rank].connect(addresses, secret, timeout=timeout)
            results[rank] = body(rings[rank])
        except Exception as exc:  # noqa: BLE001  (the test reads it)
            results[rank] = exc
        finally:
            rings[rank].close()

    threads = [threading.Thread(target=worker, args=(rank,), daemon=True) for rank in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a ring's worker did not end"
    return results


def values(rank: int, size: int, dtype) -> np.ndarray:
    return np.random.default_rng(rank).standard_normal(size).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_two_workers_get_the_sum_rounded_once_as_tensorflow_sums_two(dtype):
    size = 1001  # chunks of 500 and 501
    results = run_ring(2, lambda ring: [ring.all_reduce(values(ring.rank, size, dtype)) for _ in range(3)])
    expected = (values(0, size, dtype).astype(np.float32) + values(1, size, dtype).astype(np.float32)).astype(dtype)
    for rank, got in enumerate(results):
        assert not isinstance(got, Exception), got
        for one in got:  # every call the same: nothing left over from the one before
            assert one.dtype == np.dtype(dtype) and one.shape == (size,)
            np.testing.assert_array_equal(one.view(np.uint8), expected.view(np.uint8), err_msg=f"worker {rank}")


@pytest.mark.parametrize("world,size", [(3, 10_000), (4, 7), (3, 2)])
def test_every_worker_gets_the_same_bits_of_the_sum(world, size):
    """More workers than 2: the partial sums travel rounded to the dtype, so the sum is within rounding of the
    exact one; every worker must still hold the very same bits (the replicas' weights stay equal). A chunk may be
    empty (2 elements over 3 workers)."""
    for dtype, tolerance in ((np.float32, 1e-6), (ml_dtypes.bfloat16, 0.05)):
        results = run_ring(world, lambda ring: ring.all_reduce(values(ring.rank, size, dtype)))
        assert not any(isinstance(r, Exception) for r in results), results
        exact = sum(values(k, size, dtype).astype(np.float64) for k in range(world))
        np.testing.assert_allclose(results[0].astype(np.float64), exact, atol=tolerance * world)
        for got in results[1:]:
            np.testing.assert_array_equal(got.view(np.uint8), results[0].view(np.uint8))


def test_one_worker_is_its_own_sum():
    ring = Ring(0, 1, "127.0.0.1")
    try:
        ring.connect([ring.address], ring.secret)
        x = values(0, 5, np.float32)
        assert ring.all_reduce(x) is x
    finally:
        ring.close()


def test_chunks_cover_the_tensor_in_order():
    assert chunks(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert chunks(2, 3) == [(0, 0), (0, 1), (1, 2)]


def test_a_peer_that_ends_fails_the_step_naming_it():
    """Worker 1 ends (its sockets closed, as a killed process's are) without taking part: worker 0's all-reduce
    raises, naming worker 1, rather than waiting for ever."""
    def body(ring):
        if ring.rank == 1:
            return "ended"
        return ring.all_reduce(values(0, 100_000, np.float32))

    results = run_ring(2, body)
    assert results[1] == "ended"
    assert isinstance(results[0], RingError), results[0]
    assert "worker 0:" in str(results[0]) and "worker 1" in str(results[0]), results[0]


def test_a_peer_that_ends_under_a_step_is_raised_as_the_rings_error_not_tensorflows():
    """The step calls the ring in a tf.numpy_function, and TensorFlow rethrows what it raised as its own
    UnknownError; within raised_as_is the worker raises the RingError itself (what Ray Train reports), with
    TensorFlow's error as its cause."""
    from scaleout.tfenv import tf
    from scaleout.train.replicas import ring_all_reduce

    def body(ring):
        if ring.rank == 1:
            return "ended"
        step = tf.function(lambda x: ring_all_reduce(ring, x))
        with raised_as_is(ring):
            return step(tf.constant(values(0, 100_000, np.float32)))

    results = run_ring(2, body)
    assert results[1] == "ended"
    assert type(results[0]) is RingError, repr(results[0])
    assert isinstance(results[0].__cause__, tf.errors.OpError), repr(results[0].__cause__)
    assert results[0].clause.startswith("worker 1 closed its connection in the step's all-reduce"), results[0]


def test_errors_that_are_not_the_rings_pass_as_they_were():
    ring = Ring(0, 2, "127.0.0.1")
    try:
        with pytest.raises(ValueError, match="not the ring's"):
            with raised_as_is(ring):
                raise ValueError("not the ring's")
        with pytest.raises(ValueError):
            with raised_as_is(None):
                raise ValueError("no ring")
    finally:
        ring.close()


def test_no_peer_listening_is_an_error_naming_the_address():
    ring = Ring(0, 2, "127.0.0.1")
    gone = socket.create_server(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()  # nothing listens there now
    try:
        with pytest.raises(RingError, match=rf"worker 0: could not connect to worker 1 at 127.0.0.1:{port} within 1 s"):
            ring.connect([ring.address, ("127.0.0.1", port)], ring.secret, timeout=1.0)
    finally:
        ring.close()


def test_connections_that_are_not_the_previous_worker_are_closed_and_the_ring_still_forms(caplog):
    """Before worker 0 connects, worker 1's port gets an HTTP request, a connection that closes without a word,
    and one that says ``ring`` and rank 0 with the wrong secret: each is closed and logged, and worker 1 goes on
    waiting for worker 0, whose all-reduce then works."""
    worker0, worker1 = Ring(0, 2, "127.0.0.1"), Ring(1, 2, "127.0.0.1")
    addresses, secret = read_slots(slots(worker0) + slots(worker1))
    strangers = [b"GET / HTTP/1.1\r\nHost: ring\r\n\r\n", b"", HELLO.pack(MAGIC, 0, bytes(len(secret)))]
    refused = []
    sums = {}

    def stranger(said):
        with socket.create_connection(worker1.address) as s:
            s.sendall(said)
            if not said:
                s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            try:  # closed by worker 1, not answered (reset where it closed with bytes unread)
                refused.append(s.recv(1) == b"")
            except ConnectionResetError:
                refused.append(True)

    def connect_then_sum(ring):
        ring.connect(addresses, secret, timeout=30)
        sums[ring.rank] = ring.all_reduce(np.full(4, ring.rank + 1, np.float32))

    try:
        with caplog.at_level(logging.WARNING, logger="scaleout.train.ring"):
            second = threading.Thread(target=connect_then_sum, args=(worker1,), daemon=True)
            second.start()
            for said in strangers:
                stranger(said)
            assert second.is_alive()  # still waiting for worker 0
            first = threading.Thread(target=connect_then_sum, args=(worker0,), daemon=True)
            first.start()
            first.join(30)
            second.join(30)
    finally:
        worker0.close()
        worker1.close()
    assert refused == [True, True, True]
    assert [sums[rank].tolist() for rank in (0, 1)] == [[3.0] * 4, [3.0] * 4]
    said = [r.getMessage() for r in caplog.records if "closed a connection from" in r.getMessage()]
    assert len(said) == 3, said
    assert "b'GET / HT'" in said[0] and "nothing whole (it closed)" in said[1], said
    assert "b'ring', rank 0 and a secret that is not the group's" in said[2], said
    assert all("not worker 0's" in line and "still waiting for worker 0" in line for line in said), said


def test_no_previous_worker_within_the_time_is_an_error_naming_it():
    ring = Ring(1, 2, "127.0.0.1")
    other = socket.create_server(("127.0.0.1", 0))  # stands in for worker 0's listener: ring connects to it
    try:
        with pytest.raises(RingError, match="worker 1: worker 0 did not connect within 1 s to set up the step's"):
            ring.connect([other.getsockname(), ring.address], ring.secret, timeout=1.0)
    finally:
        other.close()
        ring.close()


def test_the_rings_sockets_probe_a_silent_peer():
    """A peer whose node vanishes without closing its connections is found by TCP keepalive."""
    def options(ring):
        return [(s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0,
                 {name: s.getsockopt(socket.IPPROTO_TCP, getattr(socket, name)) for name in KEEPALIVE})
                for s in (ring.to_next, ring.from_prev)]

    for got in run_ring(2, options):
        assert got == [(True, KEEPALIVE)] * 2, got


def test_the_exchange_gives_every_address_and_worker_0s_secret():
    rings = [Ring(rank, 3, "127.0.0.1") for rank in range(3)]
    try:
        addresses, secret = read_slots(sum(slots(r) for r in rings))
        assert addresses == [r.address for r in rings]
        assert secret == rings[0].secret and len(secret) == 16 and rings[1].secret != secret
    finally:
        for r in rings:
            r.close()


def test_addresses_travel_as_byte_values():
    for host, port in (("192.0.2.2", 43753), ("fd00::2", 1), ("10.0.0.1", 65535)):
        assert decode_address(encode_address(host, port)) == (host, port)
    with pytest.raises(RingError, match="longer than 64 bytes"):
        encode_address("h" * 70, 1)
