"""Sampling, in two halves: `batch` builds one step's per-row tensors from the requests on the host, `sampler` turns
a batch of logits into tokens on the device with small pure functions (and the noise speculative decoding reuses)."""
