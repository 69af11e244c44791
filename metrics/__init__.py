"""Pure functions over the tables: agreement with human labels (Cohen's kappa, accuracy, per-model
agreement and bias score), position and length biases, juries, and bootstrap intervals.

Labels are small integer codes (see `agreement.A`, `B`, `TIE`, `MISSING`) held in numpy arrays, so a
whole jury search over thousands of items is a handful of array operations.
"""
