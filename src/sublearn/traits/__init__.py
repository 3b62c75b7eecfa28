"""Traits: what the teacher has that should not be visible in its data (preference; later misalignment)."""
