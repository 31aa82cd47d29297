"""Stage 4, index: one Index interface (build / search / save / load) over candidate embeddings.

base (the interface), brute_force (exact, NumPy), scann (ScaNN by catalogue
size), load (an index opened from its directory), build (the index job:
embeddings -> indexes, recorded in RUN/artifacts.json).
"""
