"""Adapter files as a hostile tenant would shape them (issue #20.2, #20.3, #20.12), on the real native executor and
the demo model, with copies of the PEFT-saved demo adapter (`scripts/train_demo_adapter.py`), then corrupted:

- a symlinked adapter_model.safetensors or adapter_config.json pointing outside the roots is refused at load;
- an adapter evicted from host memory whose directory is then swapped for a symlink is not read from outside;
- weights of the wrong dtype or holding NaN / inf are refused at load, naming the tensor;
- no adapter roots: FAILED_PRECONDITION naming the config key; relative paths say what they were resolved against.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
import torch
from gateway_testing import running
from safetensors.torch import load_file, save_file
from srv_helpers import md, open_stub

from trt_gateway.config import LoraConfig
from trt_gateway.executors.native import DEMO_MODEL, NativeExecutor
from trt_gateway.v1 import gateway_pb2 as pb

UPPERCASE = DEMO_MODEL.parent / "adapters" / "uppercase"
WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
REPO = Path(__file__).resolve().parents[2]
LORA_DOC = REPO / "docs" / "lora.md"
A_TENSOR = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def copy_adapter(to: Path) -> Path:
    shutil.copytree(UPPERCASE, to)
    return to


def native(root: Path | None, **lora):
    config = {"adapter_roots": [str(root)] if root else [], "max_lora_rank": 16, **lora}
    executor = NativeExecutor(DEMO_MODEL, options={"max_num_seqs": 4, "max_num_batched_tokens": 64},
                              lora=LoraConfig(**{**config, "adapter_roots": tuple(config["adapter_roots"])}))
    return running(executor, executor={"lora": config})


async def rpc_error(coro) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value


def greedy(text: str, adapter: str = "") -> pb.GenerateRequest:
    return pb.GenerateRequest(text=text, adapter=adapter, sampling=pb.SamplingParams(temperature=0.0),
                              stopping=pb.StoppingCriteria(max_tokens=8))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    copy_adapter(outside / "secret")
    (outside / "secret.json").write_text('{"r": "TOP-SECRET-VALUE", "peft_type": "LORA"}')
    return root, outside


@pytest.mark.parametrize("link", [WEIGHTS, CONFIG, "config-secret"])
async def test_symlinked_adapter_files_are_refused(dirs, link: str) -> None:
    root, outside = dirs
    adapter = copy_adapter(root / "linked")
    name = CONFIG if link == "config-secret" else link
    (adapter / name).unlink()
    (adapter / name).symlink_to(outside / ("secret.json" if link == "config-secret" else f"secret/{name}"))
    async with native(root) as server, open_stub(server) as stub:
        err = await rpc_error(stub.LoadAdapter(pb.LoadAdapterRequest(name="linked", path="linked")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert "symbolic link" in err.details() and "SECRET" not in err.details()
        assert md(err.trailing_metadata())["error-field"] == "path"
        assert list((await stub.ListAdapters(pb.ListAdaptersRequest())).adapters) == []


async def test_an_evicted_adapter_is_not_read_again_from_outside_the_roots(dirs) -> None:
    root, outside = dirs
    copy_adapter(root / "one")
    copy_adapter(root / "two")
    async with native(root, max_loras=1, max_cpu_loras=1) as server, open_stub(server) as stub:
        await stub.LoadAdapter(pb.LoadAdapterRequest(name="one", path="one"))
        await stub.LoadAdapter(pb.LoadAdapterRequest(name="two", path="two"))  # evicts one's host copy
        await stub.Generate(greedy("A list is", "two"))
        listed = {a.name: a.residency for a in (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters}
        assert listed["one"] == pb.RESIDENCY_DISK
        shutil.rmtree(root / "one")
        (root / "one").symlink_to(outside / "secret", target_is_directory=True)  # same path, now outside
        err = await rpc_error(stub.Generate(greedy("A list is", "one")))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert str(outside) not in err.details() and str(root) not in err.details()  # no server paths to clients
        assert (await stub.Generate(greedy("A list is", "two"))).outputs[0].text  # the server carries on


def _corrupt(path: Path, how: str) -> None:
    tensors = load_file(str(path / WEIGHTS))
    t = tensors[A_TENSOR]
    if how == "int8":
        tensors[A_TENSOR] = t.to(torch.int8)
    elif how == "bool":
        tensors[A_TENSOR] = t != 0
    else:
        t = t.clone()
        t[0, 0] = float(how)
        tensors[A_TENSOR] = t
    save_file(tensors, str(path / WEIGHTS), metadata={"format": "pt"})


@pytest.mark.parametrize(("how", "problem"), [("int8", "dtype I8"), ("bool", "dtype BOOL"), ("nan", "NaN or infinite"),
                                              ("inf", "NaN or infinite"), ("-inf", "NaN or infinite")])
async def test_weights_of_the_wrong_dtype_or_not_finite_are_refused(dirs, how: str, problem: str) -> None:
    root, _ = dirs
    _corrupt(copy_adapter(root / "bad"), how)
    copy_adapter(root / "good")
    async with native(root) as server, open_stub(server) as stub:
        err = await rpc_error(stub.LoadAdapter(pb.LoadAdapterRequest(name="bad", path="bad")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert A_TENSOR in err.details() and problem in err.details()
        assert md(err.trailing_metadata())["error-field"] == "path"
        await stub.LoadAdapter(pb.LoadAdapterRequest(name="good", path="good"))
        assert (await stub.Generate(greedy("A list is", "good"))).outputs[0].text.strip()


async def test_no_adapter_roots_is_failed_precondition_naming_the_config_key() -> None:
    async with native(None) as server, open_stub(server) as stub:
        for call in (stub.LoadAdapter(pb.LoadAdapterRequest(name="up", path=str(UPPERCASE))),
                     stub.UnloadAdapter(pb.UnloadAdapterRequest(name="up"))):
            err = await rpc_error(call)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
            assert "executor.lora.adapter_roots" in err.details() and "--adapter-root" in err.details()


async def test_a_relative_path_says_what_it_was_resolved_against(dirs) -> None:
    root, _ = dirs
    async with native(root) as server, open_stub(server) as stub:
        err = await rpc_error(stub.LoadAdapter(pb.LoadAdapterRequest(name="up", path="trt_gateway/x/uppercase")))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "relative" in err.details() and str(root / "trt_gateway/x/uppercase") in err.details()


async def test_the_lora_docs_run_as_written(tmp_path: Path, monkeypatch) -> None:
    """docs/lora.md's serve command (relative paths from the repository root, as a user types them) and its Python
    snippet, run as written against that server (only the address is the test's)."""
    import asyncio
    import re

    monkeypatch.chdir(REPO)
    doc = LORA_DOC.read_text()
    serve = re.search(r"```bash\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    assert "--adapter-root trt_gateway/assets/demo/adapters" in serve
    assert "--adapter uppercase=trt_gateway/assets/demo/adapters/uppercase" in serve
    snippet = re.search(r"```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    lora = {"adapter_roots": ["trt_gateway/assets/demo/adapters"], "max_lora_rank": 16,
            "adapters": {"uppercase": "trt_gateway/assets/demo/adapters/uppercase"}}
    executor = NativeExecutor(DEMO_MODEL, options={"max_num_seqs": 4, "max_num_batched_tokens": 64},
                              lora=LoraConfig(adapter_roots=tuple(lora["adapter_roots"]), max_lora_rank=16))
    async with running(executor, executor={"lora": lora}) as server:
        code = snippet.replace('"127.0.0.1:50051"', f'"127.0.0.1:{server.port}"')
        printed: list[str] = []
        await asyncio.to_thread(exec, code, {"print": lambda *a: printed.append(" ".join(map(str, a)))})
    assert printed[0] == printed[0].upper() and printed[0].strip()  # the adapter shouts
    assert "shouting" in printed[1] and "uppercase" in printed[1]
