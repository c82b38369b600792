"""A pricing HTTP service whose logic is a hot-reloaded bundle (see app.py)."""
