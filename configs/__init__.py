"""ml_collections configurations: `default.py` holds every key; the others override it."""
