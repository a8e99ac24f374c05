"""Write a FileDescriptorSet from the _pb2 modules of the installed flyteidl2 package, or
compile our own protos into one with the pinned protoc of grpcio-tools.

Usage: descriptors.py OUT.binpb OUT.files ROOT.proto...
       descriptors.py --compile PROTO_DIR OUT.binpb OUT.files ROOT.proto...

The set holds the ROOT files and everything they import, imports first, then by name, so the same
package gives the same bytes. OUT.files lists the same names, one per line. The _pb2 modules carry
no source info, so generated code has no proto comments.
"""

import importlib
import sys

from google.protobuf import descriptor_pb2


def load(name: str):
    module = name.removesuffix(".proto").replace("/", ".") + "_pb2"
    return importlib.import_module(module).DESCRIPTOR


def main(out_set: str, out_files: str, roots: list[str]) -> None:
    ordered = []
    seen = set()

    def visit(file) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in sorted(file.dependencies, key=lambda d: d.name):
            visit(dependency)
        ordered.append(file)

    for name in sorted(roots):
        visit(load(name))
    out = descriptor_pb2.FileDescriptorSet()
    for file in ordered:
        out.file.add().MergeFromString(file.serialized_pb)
    with open(out_set, "wb") as f:
        f.write(out.SerializeToString(deterministic=True))
    with open(out_files, "w") as f:
        f.writelines(file.name + "\n" for file in ordered)


def compile_protos(proto_dir: str, out_set: str, out_files: str, roots: list[str]) -> None:
    import grpc_tools
    from grpc_tools import protoc

    # Google's well-known types ship inside grpcio-tools; source info keeps our comments as docs.
    well_known = grpc_tools.__path__[0] + "/_proto"
    status = protoc.main(
        ["protoc", "-I" + proto_dir, "-I" + well_known, "--include_imports",
         "--include_source_info", "--descriptor_set_out=" + out_set, *sorted(roots)]
    )
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    compiled = descriptor_pb2.FileDescriptorSet()
    with open(out_set, "rb") as f:
        compiled.ParseFromString(f.read())
    with open(out_files, "w") as f:
        f.writelines(file.name + "\n" for file in compiled.file)


if __name__ == "__main__":
    if sys.argv[1] == "--compile":
        compile_protos(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3:])
