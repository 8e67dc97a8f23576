"""Multi-LoRA serving: PEFT adapters (adapter.py), the batched per-token computation and slot storage (batched.py),
and the registry of adapters with its GPU-slot LRU over a CPU cache (registry.py)."""
