"""Model implementations. `models.llama` covers Llama 2/3, Mistral, Qwen2/2.5, Qwen3, Gemma and Gemma2: one decoder,
whose differences (biases, q/k norms, norm style, activation, windows, soft-capping) come from `ModelConfig`."""
