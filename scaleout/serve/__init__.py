"""Stage 5b, serve: recommendations from a run and retrieval SavedModels that serve raw user ids.

seen (each user's training items, excluded at serving), catalogue (a run's
towers and embeddings loaded for serving: ``Catalogue.recommend``), export
(the TFRS BruteForce / ScaNN SavedModels, loaded back and queried).
"""
