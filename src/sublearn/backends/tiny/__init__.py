"""The embedded models: small transformers architectures with locally trained tokenizers, pre-trained by sublearn."""
