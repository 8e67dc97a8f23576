"""Building blocks of the decoder models: projections, norms, rotary embeddings and paged attention."""
