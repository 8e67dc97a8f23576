"""ListAdapters / LoadAdapter / UnloadAdapter and generation with an adapter, with real adapter directories under a
temporary adapter root; path confinement ('..', absolute paths outside, symlinks escaping the root)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from srv_helpers import SLOW, long_req, md, open_stub, poll, running

from trt_gateway.executors.echo import EchoExecutor
from trt_gateway.v1 import gateway_pb2 as pb


def make_adapter(directory: Path, r: int = 8, alpha: float = 16, modules: tuple[str, ...] = ("v_proj", "q_proj")) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(
        json.dumps({"r": r, "lora_alpha": alpha, "target_modules": list(modules), "peft_type": "LORA"})
    )
    return directory


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "adapters"
    make_adapter(root / "sql")
    make_adapter(root / "team" / "chat", r=4, alpha=8, modules=("o_proj",))
    return root


@pytest.fixture
async def lora_stub(root: Path):
    async with running(executor={"name": "echo", "lora": {"adapter_roots": [str(root)]}}) as server:
        async with open_stub(server) as stub:
            yield stub


async def rpc_error(coro) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value


async def test_load_list_generate_unload(lora_stub, root: Path) -> None:
    stub = lora_stub
    assert list((await stub.ListAdapters(pb.ListAdaptersRequest())).adapters) == []
    info = await stub.LoadAdapter(pb.LoadAdapterRequest(name="sql", path="sql"))  # relative: under the first root
    assert info.name == "sql"
    assert info.path == str((root / "sql").resolve())
    assert info.model == "echo"
    assert info.rank == 8 and info.alpha == 16.0
    assert list(info.target_modules) == ["q_proj", "v_proj"]
    assert info.residency == pb.RESIDENCY_CPU
    info2 = await stub.LoadAdapter(pb.LoadAdapterRequest(name="chat", path=str(root / "team" / "chat")))  # absolute
    assert info2.rank == 4 and info2.alpha == 8.0 and list(info2.target_modules) == ["o_proj"]

    listed = {a.name: a for a in (await stub.ListAdapters(pb.ListAdaptersRequest(model="echo"))).adapters}
    assert set(listed) == {"sql", "chat"}
    assert listed["sql"].rank == 8 and listed["sql"].active_requests == 0

    r = await stub.Generate(pb.GenerateRequest(text="select", adapter="sql"))
    assert r.outputs[0].text == "select"

    await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="sql"))
    assert [a.name for a in (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters] == ["chat"]
    err = await rpc_error(stub.Generate(pb.GenerateRequest(text="select", adapter="sql")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert md(err.trailing_metadata())["error-field"] == "adapter"


async def test_load_is_idempotent_for_the_same_path_and_refuses_another(lora_stub) -> None:
    stub = lora_stub
    await stub.LoadAdapter(pb.LoadAdapterRequest(name="sql", path="sql"))
    again = await stub.LoadAdapter(pb.LoadAdapterRequest(name="sql", path="sql"))
    assert again.name == "sql"
    err = await rpc_error(stub.LoadAdapter(pb.LoadAdapterRequest(name="sql", path="team/chat")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert md(err.trailing_metadata())["error-field"] == "name"


async def test_unknown_adapter(lora_stub) -> None:
    for call in (
        lora_stub.Generate(pb.GenerateRequest(text="x", adapter="ghost")),
        lora_stub.UnloadAdapter(pb.UnloadAdapterRequest(name="ghost")),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "ghost" in err.details()


async def test_unload_in_use_is_failed_precondition(root: Path) -> None:
    engine = EchoExecutor(SLOW)
    cfg = {"name": "echo", "lora": {"adapter_roots": [str(root)]}}
    async with running(engine, executor=cfg) as server, open_stub(server) as stub:
        await stub.LoadAdapter(pb.LoadAdapterRequest(name="sql", path="sql"))
        call = stub.GenerateStream(long_req(100, adapter="sql", request_id="busy"))
        await call.__aiter__().__anext__()
        listed = (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters
        assert listed[0].active_requests == 1
        err = await rpc_error(stub.UnloadAdapter(pb.UnloadAdapterRequest(name="sql")))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        call.cancel()
        assert await poll(lambda: not engine._running)
        await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="sql"))


@pytest.mark.parametrize(
    "path",
    [
        "../outside",
        "sql/../../outside",
        "sql/../sql",  # '..' is refused outright, even when it would stay inside
        "{outside}",
        "/etc",
        "{escape_link}",
        "escape",  # a symlink under the root pointing outside it
        "",
        "sql/adapter_config.json",  # a file, not a directory
        "does-not-exist",
    ],
)
async def test_load_refuses_bad_paths(lora_stub, root: Path, tmp_path: Path, path: str) -> None:
    outside = make_adapter(tmp_path / "outside")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    path = path.format(outside=outside, escape_link=root / "escape")
    err = await rpc_error(lora_stub.LoadAdapter(pb.LoadAdapterRequest(name="evil", path=path)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert md(err.trailing_metadata())["error-field"] == "path"
    assert list((await lora_stub.ListAdapters(pb.ListAdaptersRequest())).adapters) == []


async def test_symlink_inside_the_root_is_fine(lora_stub, root: Path) -> None:
    (root / "alias").symlink_to(root / "sql", target_is_directory=True)
    info = await lora_stub.LoadAdapter(pb.LoadAdapterRequest(name="alias", path="alias"))
    assert info.path == str((root / "sql").resolve())  # resolved before the executor sees it


async def test_bad_adapter_config_is_invalid(lora_stub, root: Path) -> None:
    (root / "empty").mkdir()
    make_adapter(root / "huge", r=1024)
    (root / "garbled").mkdir()
    (root / "garbled" / "adapter_config.json").write_text("{not json")
    (root / "alpha").mkdir()  # a string lora_alpha was INTERNAL (float() of it raised ValueError)
    (root / "alpha" / "adapter_config.json").write_text('{"r": 4, "lora_alpha": "x", "target_modules": ["q_proj"]}')
    for path in ("empty", "huge", "garbled", "alpha"):
        err = await rpc_error(lora_stub.LoadAdapter(pb.LoadAdapterRequest(name="bad", path=path)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, err.details())
        assert md(err.trailing_metadata())["error-field"] == "path"


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a/b", "..", "x" * 65, "é", "sql\n"])
async def test_bad_adapter_name(lora_stub, name: str) -> None:
    err = await rpc_error(lora_stub.LoadAdapter(pb.LoadAdapterRequest(name=name, path="sql")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert md(err.trailing_metadata())["error-field"] == "name"
    err = await rpc_error(lora_stub.UnloadAdapter(pb.UnloadAdapterRequest(name=name)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_no_adapter_roots_is_failed_precondition(stub) -> None:
    err = await rpc_error(stub.LoadAdapter(pb.LoadAdapterRequest(name="sql", path="/tmp")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert md(err.trailing_metadata())["error-field"] == "path"
    assert "adapter root" in err.details()


async def test_unknown_model_for_adapters(lora_stub) -> None:
    for call in (
        lora_stub.ListAdapters(pb.ListAdaptersRequest(model="nope")),
        lora_stub.LoadAdapter(pb.LoadAdapterRequest(model="nope", name="sql", path="sql")),
        lora_stub.UnloadAdapter(pb.UnloadAdapterRequest(model="nope", name="sql")),
    ):
        err = await rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert md(err.trailing_metadata())["error-field"] == "model"


async def test_second_root_and_preloaded_adapters(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_adapter(a / "one")
    make_adapter(b / "two", r=2)
    lora = {"adapter_roots": [str(a), str(b)], "adapters": {"pre": str(b / "two")}}
    async with running(executor={"name": "echo", "lora": lora}) as server, open_stub(server) as stub:
        listed = {x.name: x for x in (await stub.ListAdapters(pb.ListAdaptersRequest())).adapters}
        assert set(listed) == {"pre"} and listed["pre"].rank == 2
        info = await stub.LoadAdapter(pb.LoadAdapterRequest(name="two", path=str(b / "two")))
        assert info.path == str((b / "two").resolve())
        r = await stub.Generate(pb.GenerateRequest(text="hi", adapter="pre"))
        assert r.outputs[0].text == "hi"
