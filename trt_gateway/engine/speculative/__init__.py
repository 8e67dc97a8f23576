"""Speculative decoding: propose draft tokens cheaply (n-gram lookup or a draft model), verify them in one target pass."""
