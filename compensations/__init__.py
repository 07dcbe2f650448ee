"""Compensations: the inverse of each forward activity, module by module."""
