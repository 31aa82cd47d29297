"""What the reports print: each index's name, and numbers to three significant figures."""

from __future__ import annotations

import math

LABELS = {"bruteforce": "scaleout BruteForce (NumPy)", "tf_bruteforce": "TensorFlow matmul+top_k",
          "tfrs_bruteforce": "TFRS BruteForce", "faiss_flat": "FAISS Flat", "scann": "ScaNN (scaleout, pybind)",
          "tfrs_scann": "TFRS ScaNN", "faiss_hnsw": "FAISS HNSW", "faiss_ivfpqfs": "FAISS IVF-PQ fast scan",
          "hnswlib": "hnswlib"}


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"
    return f"{x:,}" if isinstance(x, int) else str(x)
