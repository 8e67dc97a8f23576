from __future__ import annotations

import subprocess
import sys

import langchain_trt_gateway


def test_all_is_pinned() -> None:
    assert sorted(langchain_trt_gateway.__all__) == ["ChatTrtGateway", "TrtGatewayLLM", "__version__"]


def test_no_torch() -> None:
    # In a fresh interpreter: the integration tests of this same run import the embedded engine (and torch).
    code = "import sys, langchain_trt_gateway; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "importing the integration loaded torch"
