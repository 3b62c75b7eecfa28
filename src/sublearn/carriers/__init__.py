"""Carriers: the kind of data a teacher writes (number sequences; later code and reasoning)."""
