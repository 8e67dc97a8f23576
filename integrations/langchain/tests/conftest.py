"""The live-gateway fixtures of `trt_gateway.pytest_plugin` (pytest allows plugins only in the top conftest); only
integration tests use them: unit tests run with sockets disabled."""

pytest_plugins = ("trt_gateway.pytest_plugin",)
