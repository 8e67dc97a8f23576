from tensorrt_llm.lora_helper import LoraConfig  # re-exported, as in the real package

__all__ = ["LoraConfig"]
