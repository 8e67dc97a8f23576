"""Building blocks of the decoder models: projections (with the batched LoRA term), norms, rotary embeddings and
paged attention."""
