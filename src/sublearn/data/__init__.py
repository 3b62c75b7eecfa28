"""Data files shipped with sublearn (ban lists)."""
