"""Generate (or, with --check, verify) the Python code for proto/trt_gateway/v1/*.proto.

The output lands in trt_gateway/v1/ (the import path follows the proto package). CI runs `--check`, which regenerates
into a temporary directory and fails if the committed files differ, so generated code can never go stale. Generation is
pinned to the grpcio-tools version in pyproject's [dev] extra, because the generated files embed it.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_DIR = Path("trt_gateway") / "v1"


def generate(out_dir: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    protos = sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted((out_dir / PACKAGE_DIR).glob("*_pb2*.py*"))
    (out_dir / PACKAGE_DIR / "__init__.py").write_text('"""Generated protobuf / gRPC code for trt_gateway.v1."""\n')
    return generated + [out_dir / PACKAGE_DIR / "__init__.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed generated code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [
            str(PACKAGE_DIR / f.name)
            for f in fresh
            if not (ROOT / PACKAGE_DIR / f.name).exists() or not filecmp.cmp(f, ROOT / PACKAGE_DIR / f.name, shallow=False)
        ]
    if stale:
        print("generated protobuf code is stale; run `python scripts/gen_proto.py`:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    print("generated protobuf code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
