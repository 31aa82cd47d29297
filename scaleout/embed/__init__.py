"""Stage 3, embed: every candidate through the trained candidate tower, in resumable parts (locally or Ray Data).

parts (the candidate table cut into parts), output (part files, sidecars, the
finished set), job (the embedding job), imports (embeddings made elsewhere),
embedding_set (a finished embeddings directory, read back and checked).
"""
