"""Model implementations. `models.llama` covers Llama 2/3, Mistral and Qwen2/2.5 (the same decoder, differing biases)."""
