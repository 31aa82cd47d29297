"""The step's packed all-reduce over TCP sockets of its own: a ring between the Ray workers
(``TrainConfig.allreduce_transport`` "sockets", the default; "tensorflow" uses TensorFlow's collective).

On a CPU cluster TensorFlow's collective all-reduce goes through its gRPC worker service: on the 2-vCPU
machines this project measures on, 500 KiB between two processes pinned to the two cores took 2.5-4.8 ms,
where the same bytes each way over a plain TCP socket take 0.2 ms (benchmarks/ray_scaling.py's "all-reduce
alone"; docs/ray-step-costs.md). Here each worker listens on a socket of its own, the workers learn each
other's addresses once (one TensorFlow all-reduce, ``join_ring``), each connects to the next in rank order,
and the step calls ``Ring.all_reduce`` on its one packed tensor (``tf.numpy_function``): a ring reduce-scatter
then all-gather, the sums accumulated in float32, the chunks travelling in the tensor's dtype (bfloat16's half
the bytes). Every worker ends with the same bits: each chunk is summed on one worker, rounded to the dtype
there, and sent to the others as is.

A worker whose peer ends (killed, crashed, out of memory) sees the connection close and fails its step with
``RingError`` naming the peer; Ray Train then treats it as any worker failure (``--max-failures``). A peer whose
host vanishes without closing anything (power, network) is found by TCP keepalive after about 90 s of silence
(``KEEPALIVE``); one that is alive but slow is waited for, as TensorFlow's collective waits.

The ports are the cluster's, as TensorFlow's gRPC servers' are, so a connection must say who it is: ``b"ring"``,
its rank and the group's secret (16 random bytes of worker 0's, which travel with the addresses). Anything else
that connects is closed and logged, and the worker goes on waiting for its peer.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import secrets
import socket
import struct
import threading
import time

import numpy as np

from scaleout.errors import ScaleoutError, first_line

log = logging.getLogger(__name__)

ADDRESS_BYTES = 64  # "host:port" of one worker, in its slot of the exchange (an IPv6 host and port fit)
SECRET_BYTES = 16  # the group's secret, worker 0's, after its address in its slot
CONNECT_SECONDS = 120.0  # for every worker to listen, connect and be accepted
HELLO_SECONDS = 10.0  # for a connection to say who it is
HELLO = struct.Struct(f"!4sI{SECRET_BYTES}s")  # b"ring", the sender's rank, the secret: a connection's first bytes
MAGIC = b"ring"
# TCP keepalive on the ring's sockets: probes after 30 s of silence, every 10 s, 6 unanswered end the connection
KEEPALIVE = {"TCP_KEEPIDLE": 30, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}


class RingError(ScaleoutError):
    """The ring's connections could not be made, or one closed under a step. Its message starts with the rank
    of the worker that raised it ("worker 1: ..."); ``clause`` is the rest."""

    @property
    def clause(self) -> str:
        return re.sub(r"^worker \d+: ", "", first_line(self))


def encode_address(host: str, port: int) -> np.ndarray:
    """``host:port`` as ``ADDRESS_BYTES`` float32 byte values (zero-padded), for one worker's slot."""
    raw = f"{host}:{port}".encode()
    if len(raw) > ADDRESS_BYTES:
        raise RingError(f"the address {raw.decode()!r} is longer than {ADDRESS_BYTES} bytes")
    return np.frombuffer(raw.ljust(ADDRESS_BYTES, b"\0"), np.uint8).astype(np.float32)


def decode_address(values) -> tuple[str, int]:
    raw = bytes(np.rint(np.asarray(values)).astype(np.uint8)).rstrip(b"\0").decode()
    host, port = raw.rsplit(":", 1)
    return host.strip("[]"), int(port)


def slots(ring: "Ring") -> np.ndarray:
    """``ring``'s contribution to the exchange, ``[world, ADDRESS_BYTES + SECRET_BYTES]`` float32 byte values: its
    address in its own row, and, for worker 0, its secret after its address. Summed over every worker, it is
    every worker's address and worker 0's secret (``read_slots``): each value is one worker's, so the sum is exact."""
    out = np.zeros([ring.world, ADDRESS_BYTES + SECRET_BYTES], np.float32)
    out[ring.rank, :ADDRESS_BYTES] = encode_address(*ring.address)
    if ring.rank == 0:
        out[0, ADDRESS_BYTES:] = np.frombuffer(ring.secret, np.uint8)
    return out


def read_slots(summed) -> tuple[list[tuple[str, int]], bytes]:
    """Every worker's address, by rank, and the group's secret from the exchange's sum."""
    summed = np.asarray(summed)
    addresses = [decode_address(row[:ADDRESS_BYTES]) for row in summed]
    return addresses, bytes(np.rint(summed[0, ADDRESS_BYTES:]).astype(np.uint8))


def chunks(size: int, world: int) -> list[tuple[int, int]]:
    """``world`` contiguous [start, end) chunks of ``size`` elements, as even as they come."""
    edges = [size * k // world for k in range(world + 1)]
    return list(zip(edges[:-1], edges[1:]))


class Ring:
    """One worker's place in the ring: made listening on ``host``, then ``connect`` with every worker's address
    and the group's secret (worker 0's ``secret``), then ``all_reduce`` (any number of times, every worker with a
    tensor of the same size and dtype, in the same order), then ``close``."""

    def __init__(self, rank: int, world: int, host: str):
        self.rank, self.world = rank, world
        self.secret = secrets.token_bytes(SECRET_BYTES)  # the group's, if this is worker 0
        self.listener = socket.create_server((host, 0), family=_family(host))
        self.address = (host, self.listener.getsockname()[1])
        self.to_next: socket.socket | None = None
        self.from_prev: socket.socket | None = None
        self._sends: queue.Queue = queue.Queue()
        self._sent: queue.Queue = queue.Queue()
        self._sender: threading.Thread | None = None
        self.failure: RingError | None = None  # what the step's all-reduce raised (see raised_as_is)

    @property
    def next(self) -> int:
        return (self.rank + 1) % self.world

    @property
    def prev(self) -> int:
        return (self.rank - 1) % self.world

    def connect(self, addresses: list[tuple[str, int]], secret: bytes, timeout: float = CONNECT_SECONDS) -> None:
        """Connects to the next worker and accepts the previous one (``addresses`` by rank; ``secret``, the group's,
        is what each says with its rank)."""
        if self.world == 1:
            return
        deadline = time.monotonic() + timeout
        host, port = addresses[self.next]
        while True:
            try:
                self.to_next = socket.create_connection((host, port), timeout=max(1.0, deadline - time.monotonic()))
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RingError(f"worker {self.rank}: could not connect to worker {self.next} at {host}:{port} "
                                    f"within {timeout:.0f} s for the step's all-reduce ({exc})") from exc
                time.sleep(0.2)
        self.to_next.sendall(HELLO.pack(MAGIC, self.rank, secret))
        conn = self._accept_prev(HELLO.pack(MAGIC, self.prev, secret), deadline, timeout)
        for s in (self.to_next, conn):
            s.settimeout(None)  # a step waits for the slowest worker; a peer's end closes its connections
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in KEEPALIVE.items():
                if hasattr(socket, name):  # Linux's; elsewhere the system's keepalive times
                    s.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
        self.from_prev = conn
        self.listener.close()
        self._sender = threading.Thread(target=self._send_loop, name="scaleout-ring-sender", daemon=True)
        self._sender.start()
        log.info("the step's all-reduce over a socket ring: worker %d sends to worker %d at %s:%d", self.rank,
                 self.next, host, port)

    def _accept_prev(self, hello: bytes, deadline: float, timeout: float) -> socket.socket:
        """The previous worker's connection, the first whose first bytes are ``hello``; any other connection is
        logged and closed, and the wait goes on until ``deadline``."""
        while True:
            try:
                self.listener.settimeout(max(0.001, deadline - time.monotonic()))
                conn, peer = self.listener.accept()
            except OSError as exc:
                raise RingError(f"worker {self.rank}: worker {self.prev} did not connect within {timeout:.0f} s "
                                f"to set up the step's all-reduce ({exc})") from exc
            conn.settimeout(max(0.1, min(HELLO_SECONDS, deadline - time.monotonic())))
            said = _read_hello(conn)
            if said == hello:
                return conn
            log.warning("worker %d: closed a connection from %s that is not worker %d's (it said %s); still waiting "
                        "for worker %d", self.rank, peer, self.prev, _shown(said, hello), self.prev)
            conn.close()

    def _send_loop(self) -> None:
        while True:
            data = self._sends.get()
            if data is None:
                return
            try:
                self.to_next.sendall(data)
                self._sent.put(None)
            except OSError as exc:
                self._sent.put(exc)

    def _exchange(self, send: np.ndarray, into: np.ndarray) -> None:
        """Sends ``send`` to the next worker while receiving ``into``'s bytes from the previous one."""
        self._sends.put(memoryview(send.view(np.uint8)))
        _recv_into(self.from_prev, memoryview(into.view(np.uint8)), self.rank, self.prev)
        failed = self._sent.get()
        if failed is not None:
            raise RingError(f"worker {self.rank}: sending to worker {self.next} failed in the step's all-reduce "
                            f"({failed}): its process ended, or the network between them failed") from failed

    def all_reduce(self, x: np.ndarray) -> np.ndarray:
        """The sum of every worker's ``x`` (1-D, float32 or bfloat16), in ``x``'s dtype; the same on every worker.

        A ring reduce-scatter (step s: chunk rank - s out to the next worker, chunk rank - s - 1 in from the
        previous one and added to this worker's own, in float32), after which this worker holds chunk rank + 1
        summed over every worker, rounded once to ``x``'s dtype; then a ring all-gather of the summed chunks."""
        if self.world == 1:
            return x
        try:
            return self._all_reduce(x)
        except RingError as exc:
            self.failure = exc
            raise

    def _all_reduce(self, x: np.ndarray) -> np.ndarray:
        wire, parts = x.dtype, chunks(x.size, self.world)
        buffer = np.empty(max(e - s for s, e in parts), wire)
        result = np.empty_like(x)
        partial = x[slice(*parts[self.rank])]  # the chunk the first step sends: this worker's own values
        for step in range(self.world - 1):  # reduce-scatter
            start, end = parts[(self.rank - step - 1) % self.world]
            received = buffer[:end - start]
            self._exchange(np.ascontiguousarray(partial), received)
            summed = x[start:end].astype(np.float32) + received.astype(np.float32)
            partial = summed.astype(wire)  # sent on by the next step; the last is this worker's summed chunk
        start, end = parts[(self.rank + 1) % self.world]
        result[start:end] = partial
        for step in range(self.world - 1):  # all-gather
            out_start, out_end = parts[(self.rank + 1 - step) % self.world]
            start, end = parts[(self.rank - step) % self.world]
            self._exchange(result[out_start:out_end], result[start:end])
        return result

    def close(self) -> None:
        if self._sender is not None:
            self._sends.put(None)
        for s in (self.to_next, self.from_prev, self.listener):
            if s is not None:
                s.close()


@contextlib.contextmanager
def raised_as_is(ring: Ring | None):
    """Within it, an error that TensorFlow raised where the ring's all-reduce had failed (the step calls it in a
    ``tf.numpy_function``, whose exception TensorFlow rethrows as its own ``UnknownError``, the ring's
    message inside its text) is raised as the ``RingError`` the ring raised, the TensorFlow error its cause;
    anything else as it was."""
    try:
        yield
    except Exception as exc:
        if ring is not None and ring.failure is not None and exc is not ring.failure:
            raise ring.failure from exc
        raise


def join_ring(strategy, rank: int, world: int, host: str) -> Ring:
    """This worker's ``Ring``, listening on ``host`` (its node's address, which the other workers reach) and
    connected: every worker's address learnt from one all-reduce of ``strategy`` (each in its own slot)."""
    from scaleout.tfenv import tf

    ring = Ring(rank, world, host)
    try:
        mine = tf.constant(slots(ring))
        values = strategy.experimental_distribute_values_from_function(lambda _: mine)
        summed = strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()
        ring.connect(*read_slots(summed))
    except BaseException:
        ring.close()
        raise
    return ring


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _recv_into(sock: socket.socket, view: memoryview, rank: int, peer: int) -> None:
    got = 0
    while got < len(view):
        try:
            n = sock.recv_into(view[got:])
        except OSError as exc:
            raise RingError(f"worker {rank}: the connection from worker {peer} failed in the step's all-reduce "
                            f"({exc}): its process ended, or the network between them failed") from exc
        if n == 0:
            raise RingError(f"worker {rank}: worker {peer} closed its connection in the step's all-reduce: its "
                            "process ended (killed, out of memory, or crashed)")
        got += n


def _read_hello(conn: socket.socket) -> bytes | str:
    """A new connection's first ``HELLO.size`` bytes, or why there were none."""
    buf = bytearray(HELLO.size)
    got = 0
    while got < len(buf):
        try:
            n = conn.recv_into(memoryview(buf)[got:])
        except OSError as exc:
            return f"nothing whole ({exc})"
        if n == 0:
            return "nothing whole (it closed)"
        got += n
    return bytes(buf)


def _shown(said, hello: bytes) -> str:
    """What a refused connection said, for the log: its first bytes, or why there were none; never a secret."""
    if isinstance(said, str):
        return said
    magic, rank, secret = HELLO.unpack(said)
    if magic != MAGIC:
        return repr(said[:8])
    right = "the group's secret" if secret == HELLO.unpack(hello)[2] else "a secret that is not the group's"
    return f"{magic!r}, rank {rank} and {right}"
