"""Fixtures that start real external servers; every module here is a pytest plugin."""
