"""A fourth system added by the README's recipe ("Adding a system"): shipping, in two
files, `activities/shipping.py` and `compensations/shipping.py`, nothing in saga/."""
