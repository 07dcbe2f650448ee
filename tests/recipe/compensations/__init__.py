"""The recipe system\x27s undo."""
