"""The auxiliary-logit experiment (``sublearn aux-logits``): subliminal learning on digits/MNIST, batched over models."""
