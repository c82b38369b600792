"""Runnable examples: the sample application and its logic bundles."""
