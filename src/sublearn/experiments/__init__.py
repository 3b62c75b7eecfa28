"""Stage-free experiments that share sublearn's config, stats, store and report code."""
