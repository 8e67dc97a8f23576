"""Multi-LoRA serving: PEFT adapters (adapter.py), slot storage on every target projection (slots.py), and the
registry of adapters with its GPU-slot LRU over a CPU cache (registry.py). The per-token maths is `layers/lora.py`."""
