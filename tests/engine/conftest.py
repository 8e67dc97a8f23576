"""The engine tests' fixtures, shared with tests/golden: tiny random checkpoints and the parametrised device."""

from engine_fixtures import checkpoints, device_case, llama  # noqa: F401  (fixtures)
