"""Model backends (the only place that imports vendor SDKs): transformers (embedded and HF checkpoints)."""
