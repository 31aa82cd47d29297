"""The ANN benchmark suite: datasets, one interface over every index, measures, reports."""
