"""`vllm.lora.request.LoRARequest` (0.26): a msgspec Struct in vLLM (`__struct_fields__`, not a dataclass); its
__post_init__ checks the id and the path; equality and hash go by name."""

from __future__ import annotations

from typing import Any


class LoRARequest:
    __struct_fields__: tuple[str, ...] = ("lora_name", "lora_int_id", "lora_path", "base_model_name",
                                          "tensorizer_config_dict", "load_inplace", "is_3d_lora_weight")

    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str = "", base_model_name: str | None = None,
                 tensorizer_config_dict: dict[str, Any] | None = None, load_inplace: bool = False,
                 is_3d_lora_weight: bool = False) -> None:
        self.lora_name = lora_name
        self.lora_int_id = lora_int_id
        self.lora_path = lora_path
        self.base_model_name = base_model_name
        self.tensorizer_config_dict = tensorizer_config_dict
        self.load_inplace = load_inplace
        self.is_3d_lora_weight = is_3d_lora_weight
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def path(self) -> str:
        return self.lora_path

    def __eq__(self, other: object) -> bool:  # vLLM: equal when the names are
        return isinstance(other, LoRARequest) and self.lora_name == other.lora_name

    def __hash__(self) -> int:
        return hash(self.lora_name)

    def __repr__(self) -> str:
        return f"LoRARequest(lora_name={self.lora_name!r}, lora_int_id={self.lora_int_id}, lora_path={self.lora_path!r})"
