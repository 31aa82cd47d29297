"""Stage 5a, evaluate: FactorizedTopK through the indexes, and the honest evaluation beside baselines.

through_index (TFRS's metric with each index as candidate source),
protocols (hit rate and NDCG over the full catalogue, seen items excluded or
not), baselines (popularity, EASE, iALS), quality (``scaleout quality``).
"""
