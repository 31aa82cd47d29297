"""Stage 1, data: every source normalised to one Arrow schema, split, sharded into Parquet and read back.

sources (movielens, tfds_source, generic, synthetic, prepared_source) -> schema;
text (delimited files with line-level errors); prepare (split, shards,
vocabularies, manifest); dataset (a prepared dataset read back and checked);
tfdata (tf.data over the Parquet shards).
"""
