"""Items each user has already seen (their training interactions), removed at serving time.

``SeenItems`` holds, per user of the training vocabulary, the distinct
candidate ids of their training rows. ``Catalogue.recommend(...,
exclude_seen=True)`` asks its index for k + (the user's seen count) and drops
the seen ones; an export with ``exclude_seen`` asks for k + (the largest seen
count of any user) and masks the seen ones inside the SavedModel
(``SeenFilter``), so it still serves raw user ids alone. A user outside the
vocabulary has seen nothing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scaleout.names import MOVIE_ID, USER_ID


class SeenItems:
    def __init__(self, user_ids: np.ndarray, indptr: np.ndarray, items: np.ndarray):
        self.user_ids = np.asarray(user_ids).astype(str)  # [users]
        self.indptr = indptr  # [users + 1] int64: user i's items are items[indptr[i]:indptr[i + 1]]
        self.items = np.asarray(items).astype(str)  # candidate ids, sorted and distinct per user
        self._row = {u: i for i, u in enumerate(self.user_ids)}

    @classmethod
    def from_dataset(cls, dataset) -> "SeenItems":
        users = dataset.vocabulary(USER_ID)
        table = pa.concat_tables(pq.read_table(f, columns=[USER_ID, MOVIE_ID]) for f in dataset.files("train"))
        table = table.group_by([USER_ID, MOVIE_ID]).aggregate([])
        at = pc.index_in(table.column(USER_ID), value_set=pa.array(users))
        valid = pc.is_valid(at)
        rows = pc.filter(at, valid).to_numpy(zero_copy_only=False).astype(np.int64)
        items = pc.filter(table.column(MOVIE_ID), valid).to_numpy(zero_copy_only=False).astype(str)
        order = np.lexsort((items, rows))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(users)))]).astype(np.int64)
        return cls(users, indptr, items[order])

    def of(self, user_id: str) -> np.ndarray:
        """The candidate ids ``user_id`` has seen (none for an unknown user)."""
        row = self._row.get(user_id)
        return self.items[:0] if row is None else self.items[self.indptr[row]:self.indptr[row + 1]]

    @property
    def max_count(self) -> int:
        return int(np.diff(self.indptr).max(initial=0))

    def rows_in(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, rows): each user's seen items as sorted positions in ``ids``; items not in ``ids`` dropped."""
        position = {m: i for i, m in enumerate(np.asarray(ids).astype(str))}
        at = np.fromiter((position.get(m, -1) for m in self.items), np.int64, len(self.items))
        found = at >= 0
        user = np.repeat(np.arange(len(self.user_ids)), np.diff(self.indptr))[found]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=len(self.user_ids)))]).astype(np.int64)
        rows = at[found]
        order = np.lexsort((rows, user))
        return indptr, rows[order]


def seen_filter(seen: SeenItems, ids: np.ndarray):
    """A ``SeenFilter`` over the candidate ``ids`` (in the order of the index's rows)."""
    from scaleout.tfenv import tf

    class SeenFilter(tf.Module):
        """(user ids, scores [b, n], candidate rows [b, n], k[, items [b, m]]) -> the best k unseen (scores, rows).

        ``items``: candidate ids given with the request (the user's history as
        they send it), left out as their training items are ("" and unknown ids
        are ignored). Where fewer than k unseen candidates were retrieved, the
        rest are seen ones with score -inf.
        """

        def __init__(self):
            super().__init__()
            indptr, rows = seen.rows_in(ids)
            self.n = len(ids)
            users = tf.constant(seen.user_ids.astype(object))
            self.users = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(users, tf.range(len(seen.user_ids), dtype=tf.int64)),
                default_value=len(seen.user_ids))  # the extra, empty row
            splits = np.append(indptr, indptr[-1])
            self.seen = tf.RaggedTensor.from_row_splits(tf.constant(rows.astype(np.int32)),
                                                        tf.constant(splits, tf.int64))
            self.positions = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(np.asarray(ids).astype(str).astype(object)),
                                                    tf.range(len(ids), dtype=tf.int32)), default_value=len(ids))

        def __call__(self, user_id, scores, rows, k: int, items=None):
            seen_rows = tf.gather(self.seen, self.users.lookup(user_id)).to_tensor(default_value=self.n)
            if items is not None:
                given = self.positions.lookup(tf.convert_to_tensor(items, tf.string))
                seen_rows = tf.sort(tf.concat([seen_rows, given], axis=1), axis=1)
            # One column of padding (n, above every row) so the searched sequence is never empty.
            sorted_rows = tf.concat([seen_rows, tf.fill([tf.shape(seen_rows)[0], 1], self.n)], axis=1)
            rows = tf.cast(rows, tf.int32)
            at = tf.searchsorted(sorted_rows, rows)
            is_seen = tf.equal(tf.gather(sorted_rows, at, batch_dims=1), rows)
            masked = tf.where(is_seen, tf.constant(-np.inf, scores.dtype), scores)
            best = tf.math.top_k(masked, k=k)
            return best.values, tf.gather(rows, best.indices, batch_dims=1)

    return SeenFilter()
