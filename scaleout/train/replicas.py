"""What the replicas of a training step send each other, in as few collectives as the step allows.

On a CPU cluster every collective costs milliseconds whatever its size (about
2.5 ms between two workers on one host, over gRPC), so a step's cost under
several workers is mostly how many it runs, then how much it sends. A step here
runs one: every gradient (an embedding table's as the rows the replicas'
batches looked up where that is smaller than the table: ``slot_values``),
every logged value, and the next batch's candidate rows (``slot_rows`` /
``rows_from_floats``), in one packed all-reduce (``all_reduce_step``); the
global batch's rows were sent by the step before. Under Ray the packed
all-reduce travels over a ring of sockets of scaleout's own by default
(``scaleout.train.ring``: the same sums, a fraction of TensorFlow's gRPC cost).
The first step of a fit, with no step before it, gathers its own rows first
(``global_batch``): two. ``traced_collectives`` lists what a traced step
really sends, so a run can show it (train.json) and a test can hold it to one.

Every collective here keeps one size for the whole fit: within one ``tf.function`` call of several steps
(``steps_per_execution``) TensorFlow fixes a collective's shape at its first step, and a later step of
another size fails ("Shape mismatch in the collective instance"). So a table's gradient is not summed by
its unique rows before it travels (their number changes from batch to batch; see the README's Ray section).

With ``dtype`` bfloat16 the packed all-reduce sends half the bytes: the
gradients travel rounded to bfloat16 (8 significant bits; summed in it), while
row ids (as 8-bit parts, ``slot_rows``) and the logged values (each in its
replica's slot, as three bfloat16 parts, ``split_floats``) arrive exact, since
a slot adds only zeros.
"""

from __future__ import annotations

from scaleout.config import ALLREDUCE_DTYPES
from scaleout.tfenv import tf

# A sparse embedding gradient is made dense, and joins the step's one packed all-reduce, while its table is at
# most this size: below it, one collective of the table costs less than the several of a sparse all-reduce.
DENSE_GRADIENT_BYTES = 4 << 20


def replicas_in_sync() -> int:
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def _slot_padding(values: tf.Tensor):
    """(padding that puts ``values`` in this replica's slot of the global batch, rows before the slot)."""
    context = tf.distribute.get_replica_context()
    rows, replica = tf.shape(values)[0], context.replica_id_in_sync_group
    before, after = replica * rows, (context.num_replicas_in_sync - 1 - replica) * rows
    return tf.concat([[[before, after]], tf.zeros([tf.rank(values) - 1, 2], tf.int32)], axis=0), before


RING_OP = "ring_all_reduce"  # the name of the step's all-reduce over the ring's sockets, as traced_collectives lists it


def ring_all_reduce(ring, x):
    """The sum of every worker's 1-D ``x`` over ``ring``'s sockets (a connected ``scaleout.train.ring.Ring``), in
    ``x``'s dtype and shape: one stateful op named ``RING_OP`` in the graph, which ``traced_collectives`` lists."""
    return tf.ensure_shape(tf.numpy_function(ring.all_reduce, [x], x.dtype, stateful=True, name=RING_OP), x.shape)


def _is_ring(op) -> bool:
    return op.name.rsplit("/", 1)[-1].startswith(RING_OP)


ROW_BITS = 12  # a row travels as two float32s, row >> 12 and row & 4095: exact below 2^36 rows
# How a row id travels in each dtype of the packed all-reduce: (bits a part, parts), the first part the
# highest. A bfloat16 holds integers up to 2^8 exactly: four 8-bit parts, exact below 2^32 rows.
_ROW_PARTS = {"float32": (ROW_BITS, 2), "bfloat16": (8, 4)}


def allreduce_dtype(name: str) -> tf.DType:
    """The dtype of the packed all-reduce that ``TrainConfig.allreduce_dtype`` names (one of
    ``scaleout.config.ALLREDUCE_DTYPES``, each with its row parts here)."""
    if name not in ALLREDUCE_DTYPES or name not in _ROW_PARTS:
        raise ValueError(f"allreduce dtype {name!r}: expected one of {', '.join(ALLREDUCE_DTYPES)}")
    return getattr(tf, name)


def slot_values(values: tf.Tensor) -> tf.Tensor:
    """This replica's ``values`` ``[b, ...]`` in its slot of the global batch, flat: ``[b * replicas * ...]``,
    zero outside the slot (their sum over the replicas is every replica's values, replica-major)."""
    padding, _ = _slot_padding(values)
    return tf.reshape(tf.pad(values, padding), [-1])


def slot_rows(rows: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
    """This replica's candidate rows ``[b]`` (int64), in its slot of the global batch, as the floats of
    ``dtype`` that ``all_reduce_step`` can sum with the gradients: ``[parts * b * replicas]`` (2 parts in
    float32, 4 in bfloat16), zero outside the slot."""
    bits, parts = _ROW_PARTS[dtype.name]
    padding, _ = _slot_padding(rows)
    slotted = tf.pad(rows, padding)
    pieces = [slotted // (1 << (bits * (parts - 1)))]
    pieces += [slotted // (1 << (bits * k)) % (1 << bits) for k in range(parts - 2, -1, -1)]
    return tf.cast(tf.concat(pieces, axis=0), dtype)


def rows_from_floats(summed: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
    """The global batch's rows, replica-major (``[b * replicas]`` int64), from the sum of every replica's
    ``slot_rows`` of ``dtype`` (given as float32 or as ``dtype``)."""
    bits, parts = _ROW_PARTS[dtype.name]
    rows = tf.zeros_like(tf.split(summed, parts)[0], tf.int64)
    for part in tf.split(tf.cast(tf.round(tf.cast(summed, tf.float32)), tf.int64), parts):
        rows = rows * (1 << bits) + part
    return rows


def split_floats(x: tf.Tensor) -> tf.Tensor:
    """float32 ``[n]`` as three bfloat16 parts ``[3, n]`` (the highest first) whose float32 sum is ``x``
    exactly: each part rounds what the ones before left over, 8 of float32's 24 significant bits each."""
    parts = []
    for _ in range(3):
        part = tf.cast(x, tf.bfloat16)
        parts.append(part)
        x = x - tf.cast(part, tf.float32)
    return tf.stack(parts)


def join_floats(parts: tf.Tensor) -> tf.Tensor:
    """``split_floats``' parts ``[..., 3, n]`` (any float dtype) back to float32 ``[..., n]``."""
    parts = tf.cast(parts, tf.float32)
    return (parts[..., 0, :] + parts[..., 1, :]) + parts[..., 2, :]


def own_first(gathered: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """The replica-major global batch ``gathered`` turned so that this replica's rows (``values``) come first;
    an error if its slot does not hold them (rows sent by the step before for another batch)."""
    _, before = _slot_padding(values)
    rows = tf.shape(values)[0]
    check = tf.debugging.assert_equal(
        gathered[before:before + rows], values,
        message="the candidate rows sent ahead by the previous step do not match this batch")
    with tf.control_dependencies([check]):
        turned = tf.roll(gathered, shift=-before, axis=0)
    if values.shape[0] is not None:  # a static batch gives a static global batch (see all_reduce_step's slots)
        turned = tf.ensure_shape(turned, [values.shape[0] * replicas_in_sync()])
    return turned


def global_batch(values: tf.Tensor) -> tf.Tensor:
    """The rows of every replica's batch, this replica's first: ``[b, ...]`` -> ``[b * replicas, ...]``.

    Retrieval scores query i against every candidate and takes candidate i as
    its positive, so this replica's own rows must come first; the others are
    extra negatives. Every replica must hold the same number of rows. Each
    replica places its rows in its own slot of a zero tensor and one all-reduce
    sums them: a single collective (all_gather first gathers the shapes, a
    second one). Its gradient, an all-reduce too, sends each replica the sum of
    the gradients of its rows, so the gradients summed across replicas are
    those of the single-process loss over the global batch. Outside a
    multi-replica strategy this returns ``values``.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    padding, before = _slot_padding(values)
    gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.pad(values, padding))  # replica-major order
    return tf.roll(gathered, shift=-before, axis=0)


def gradient_form(g, v, replicas: int, dense_bytes: int = DENSE_GRADIENT_BYTES, slots: bool = True,
                  same_rows: bool = False) -> str | None:
    """How ``all_reduce_step`` sends gradient ``g`` of variable ``v``: "dense"; a sparse one as "same rows"
    (its values alone: every replica's gradient has the same rows, in the same order, ``same_rows``), "slots"
    (every replica's rows and values), "made dense" or "sparse" (a collective of its own); None for no
    gradient."""
    if g is None:
        return None
    if not isinstance(g, tf.IndexedSlices):
        return "dense"
    if same_rows:
        return "same rows"
    rows, width = g.values.shape[0], v.shape.num_elements() // v.shape[0]
    if slots and rows is not None and replicas * rows * (width + 2) < v.shape.num_elements():
        return "slots"
    return "sparse" if v.shape.num_elements() * v.dtype.size > dense_bytes else "made dense"


def all_reduce_step(gradients: list, variables: list, shown: dict[str, tf.Tensor],
                    dense_bytes: int = DENSE_GRADIENT_BYTES, averaged: frozenset = frozenset(),
                    carry: tf.Tensor | None = None, slots: bool = True, same_rows: frozenset = frozenset(),
                    dtype=tf.float32, ring=None):
    """(gradients, shown, carried) summed over the replicas, the ``averaged`` names of ``shown`` averaged
    instead; ``carried`` is the sum of ``carry`` (a vector of ``dtype``, e.g. ``slot_rows``; None without it),
    as float32.

    The packed all-reduce is of ``dtype``: float32, or bfloat16 for half the bytes (the gradients rounded
    to it, the rows and logged values exact; see the module's docstring). With ``ring`` (a connected
    ``scaleout.train.ring.Ring``) it travels over the ring's sockets, else as TensorFlow's collective.

    One all-reduce of every dense gradient, the scalars of ``shown``, ``carry``
    and the sparse gradients (an embedding table's: the rows a batch looked up)
    in the cheapest form that fits in it: those of indices ``same_rows`` (every
    replica's has the same rows in the same order: the candidate table's under
    global negatives, see ``TwoTowerModel.candidate_rows_in_common``) as their
    values alone, summed; with ``slots``, a sparse gradient of a
    fixed number of rows whose rows and values from every replica (each in its
    slot, its row ids as floats) are fewer floats than its table travels so, and
    arrives as the replicas' slices side by side (the optimizer and the row L2
    sum rows that repeat); else one whose table is at most ``dense_bytes`` is made
    dense. One more collective per larger sparse gradient of a varying number of
    rows (the strategy's own sparse all-reduce).
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    packed, slotted, sparse, common = [], [], [], []
    for i, (g, v) in enumerate(zip(gradients, variables)):
        form = gradient_form(g, v, replicas, dense_bytes, slots, i in same_rows)
        if form == "same rows":
            common.append((i, g))
        elif form == "slots":
            slotted.append((i, g))
        elif form == "sparse":
            sparse.append(i)
        elif form == "made dense":
            packed.append((i, tf.math.unsorted_segment_sum(g.values, g.indices, v.shape[0])))
        elif form == "dense":
            packed.append((i, g))
    names = list(shown)
    exact = dtype == tf.float32  # else the logged values travel in their slots, split (see split_floats)
    pieces = [tf.reshape(g, [-1]) for _, g in packed] + [tf.reshape(g.values, [-1]) for _, g in common]
    for _, g in slotted:
        pieces += [slot_values(g.values)]
    pieces = [tf.cast(p, dtype) for p in pieces] + [slot_rows(g.indices, dtype) for _, g in slotted]
    logged = tf.stack([shown[n] for n in names])
    pieces.append(logged if exact else slot_values(split_floats(logged)[tf.newaxis]))
    pieces += [] if carry is None else [carry]
    sizes = [g.shape.num_elements() for _, g in packed] + [g.values.shape.num_elements() for _, g in common]
    sizes += [replicas * g.values.shape.num_elements() for _, g in slotted]
    sizes += [_ROW_PARTS[dtype.name][1] * replicas * g.values.shape[0] for _, g in slotted]
    sizes += [len(names) * (1 if exact else 3 * replicas)] + ([] if carry is None else [tf.size(carry)])
    packed_all = tf.concat(pieces, axis=0)
    if ring is None:
        reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, packed_all)
    else:  # the same sum, every replica's bits the same, over the ring's sockets (scaleout.train.ring)
        reduced = ring_all_reduce(ring, packed_all)
    parts = tf.split(tf.cast(reduced, tf.float32), sizes)
    out = list(gradients)
    for (i, g), part in zip(packed, parts):
        out[i] = tf.reshape(part, g.shape)
    at = len(packed)
    for i, g in common:
        out[i] = tf.IndexedSlices(tf.reshape(parts[at], tf.shape(g.values)), g.indices, g.dense_shape)
        at += 1
    for k, (i, g) in enumerate(slotted):
        values = tf.reshape(parts[at + k], [replicas * g.values.shape[0]] + g.values.shape[1:].as_list())
        rows = rows_from_floats(parts[at + len(slotted) + k], dtype)
        out[i] = tf.IndexedSlices(values, tf.cast(rows, g.indices.dtype), g.dense_shape)
    at += 2 * len(slotted)
    if sparse:
        reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in sparse])
        for i, g in zip(sparse, reduced):
            out[i] = g
    summed = parts[at] if exact else tf.reduce_sum(join_floats(tf.reshape(parts[at], [replicas, 3, -1])), 0)
    return (out, {n: v / replicas if n in averaged else v for n, v in zip(names, tf.unstack(summed, num=len(names)))},
            parts[-1] if carry is not None else None)


def traced_collectives() -> list[dict]:
    """The collective ops of the step being traced so far (reading its next batch included): op type (the
    ring's all-reduce as ``RING_OP``), dtype, elements and bytes of each. Called at the end of a train step's
    tracing, it lists what one step sends."""
    ops = [op for op in tf.compat.v1.get_default_graph().get_operations()
           if op.type.startswith("Collective") or (op.type == "PyFunc" and _is_ring(op))]
    sizes = [op.inputs[0].shape.num_elements() for op in ops]  # None where the shape is not static
    return [{"op": RING_OP if op.type == "PyFunc" else op.type, "dtype": op.inputs[0].dtype.name, "elements": n,
             "bytes": None if n is None else n * op.inputs[0].dtype.size} for op, n in zip(ops, sizes)]
