"""The golden tests' fixtures, shared with tests/engine: tiny random checkpoints and the parametrised device."""

from engine_fixtures import checkpoints, device_case, llama  # noqa: F401  (fixtures)
