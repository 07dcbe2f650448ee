"""The recipe system\x27s forward side."""
