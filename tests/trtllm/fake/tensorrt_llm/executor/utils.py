class RequestError(RuntimeError):
    """One request failed; the engine lives on."""


class CppExecutorError(RuntimeError):
    """The C++ executor failed; trtllm-serve shuts down on it."""
