"""One reader per training data source; :mod:`lmsfa.training.datasets` chooses among them."""
