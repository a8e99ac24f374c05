"""Write a FileDescriptorSet from the _pb2 modules of the installed flyteidl2 package.

Usage: descriptors.py OUT.binpb OUT.files ROOT.proto...

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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
