"""Stage 2, train: the two-tower model, fitted in one process or on Ray Train workers, saved and loaded.

features (side features coded per vocabulary row), ials (iALS's fit: the
baseline's and ``--ials-weight``'s factors), towers (the query and candidate towers; served_columns, what
the served scores add to their dot product), model (the TFRS model: compute_loss with the loss options),
presets (named settings), callbacks (per-epoch log), profile (``--profile-epoch``: one epoch traced), local
and ray_backend (the two backends), saved (RUN/model written and loaded: ``Towers``), run
(``scaleout train`` / ``evaluate``).
"""
