"""Model loading: path | bytes | ModelProto -> validated ModelProto with external data resolved.

External data is resolved only inside the model's own folder: absolute locations and paths that
leave the folder (.., symlinks out) are refused before any file is opened.
"""
from __future__ import annotations

import os

import onnx
from onnx import external_data_helper

from ..errors import ModelLoadError

MIN_OPSET = 1


def _read_external(model, base_dir):
    for t in external_data_helper._get_all_tensors(model):  # noqa: SLF001 - stable onnx helper
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        if base_dir is None:
            raise ModelLoadError(f"tensor {t.name!r} uses external data {loc!r} but the model was "
                                 "not loaded from a file, so there is no folder to resolve it in")
        if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ":" in loc:
            raise ModelLoadError(f"tensor {t.name!r}: external data location {loc!r} is absolute; "
                                 "only paths inside the model's folder are allowed")
        root = os.path.realpath(base_dir)
        path = os.path.realpath(os.path.join(root, loc))
        if os.path.commonpath([root, path]) != root:
            raise ModelLoadError(f"tensor {t.name!r}: external data location {loc!r} leaves the "
                                 "model's folder; refused")
        if not os.path.isfile(path):
            raise ModelLoadError(f"tensor {t.name!r}: external data file {loc!r} not found")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError as e:
            raise ModelLoadError(f"tensor {t.name!r}: bad external data offset/length") from e
        size = os.path.getsize(path)
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
            raise ModelLoadError(f"tensor {t.name!r}: external data range [{offset}, "
                                 f"{offset + (length or 0)}) lies outside {loc!r} ({size} bytes)")
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length if length is not None else -1)
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def _has_external(proto):
    return any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in external_data_helper._get_all_tensors(proto))  # noqa: SLF001


def _skeleton(proto, big=1 << 16):
    """The model with large initializers replaced by empty stubs of the same name and type, so
    the checker validates structure without serialising hundreds of MB of weights. The weights'
    own consistency (data length vs shape) is checked when they are decoded (graph.ir)."""
    g = proto.graph
    if sum(len(t.raw_data) for t in g.initializer) < big:
        return proto
    skel = onnx.ModelProto()
    for fd, val in proto.ListFields():
        if fd.name == "graph":
            continue
        if isinstance(val, (int, float, str, bytes)):
            setattr(skel, fd.name, val)
        elif hasattr(val, "extend"):
            getattr(skel, fd.name).extend(val)
        else:
            getattr(skel, fd.name).CopyFrom(val)
    sg = skel.graph
    for fd, val in g.ListFields():
        if fd.name == "initializer":
            continue
        if isinstance(val, (int, float, str, bytes)):
            setattr(sg, fd.name, val)
        elif hasattr(val, "extend"):
            getattr(sg, fd.name).extend(val)
        else:
            getattr(sg, fd.name).CopyFrom(val)
    for t in g.initializer:
        if len(t.raw_data) < 4096:
            sg.initializer.append(t)
        else:
            stub = sg.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.append(0)
    return skel


def load_model(model, check=True):
    """Return (ModelProto, base_dir) for a path, bytes or ModelProto."""
    base_dir = None
    if isinstance(model, onnx.ModelProto):
        proto = model
        if _has_external(proto):   # resolving external data writes into the proto: copy first
            proto = onnx.ModelProto()
            proto.CopyFrom(model)
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError / RuntimeWarning types
            raise ModelLoadError(f"cannot parse model bytes as ONNX protobuf: {e}") from e
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file not found: {path!r}")
        base_dir = os.path.dirname(os.path.abspath(path))
        with open(path, "rb") as fh:
            data = fh.read()
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(data)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"cannot parse {path!r} as ONNX protobuf: {e}") from e
    else:
        raise ModelLoadError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")

    if not proto.HasField("graph"):
        raise ModelLoadError("model has no graph (empty or not an ONNX model)")
    _read_external(proto, base_dir)
    opsets = opset_map(proto)
    newest = onnx.defs.onnx_opset_version()
    if opsets.get("", 0) > newest:
        raise ModelLoadError(f"model uses default-domain opset {opsets['']}, newer than the newest "
                             f"this installation knows ({newest})")
    if check:
        _check(proto)
    if proto.functions:
        try:
            from onnx import inliner
            proto = inliner.inline_local_functions(proto)
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"cannot inline the model's local functions: {e}") from e
    return proto, base_dir


_NO_SHAPE = "Field 'shape' of 'type' is required but missing"
_UNSORTED = "Nodes in a graph must be topologically sorted"


def _check(proto):
    skel = _skeleton(proto)
    for attempt in range(2):
        try:
            onnx.checker.check_model(skel)
            return
        except onnx.checker.ValidationError as e:
            msg = str(e).strip().splitlines()
            first = msg[0] if msg else ""
            if first.startswith(_NO_SHAPE) and attempt == 0:
                # A graph output declared without a shape is legal for runtimes (onnxruntime
                # runs it), but the checker stops at it and would check nothing after. Give such
                # outputs an (unchecked) shape in a copy and check the rest.
                if skel is proto:
                    skel = onnx.ModelProto()
                    skel.CopyFrom(proto)
                _fill_missing_shapes(skel.graph)
                continue
            # Unknown operators are reported all together by the engine, with node names; nodes
            # out of order are sorted by the scheduler, which names undefined values and cycles
            # precisely. The IR checks every node against its schema (ir.check_node_schema) and
            # every tensor's data length, so these stops of the checker lose nothing listed.
            if not first.startswith(("No Op registered for", _NO_SHAPE, _UNSORTED)):
                raise ModelLoadError("invalid ONNX model: " + " ".join(msg[:3])) from e
            return
        except Exception as e:  # noqa: BLE001 - checker may raise other C++ errors
            raise ModelLoadError(f"invalid ONNX model: {e}") from e


def _fill_missing_shapes(graph):
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        which = vi.type.WhichOneof("value")
        if which in ("tensor_type", "sparse_tensor_type"):
            tt = getattr(vi.type, which)
            if not tt.HasField("shape"):
                tt.shape.SetInParent()
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("g"):
                _fill_missing_shapes(a.g)
            for g in a.graphs:
                _fill_missing_shapes(g)


def opset_map(proto):
    m = {}
    for o in proto.opset_import:
        d = o.domain if o.domain != "ai.onnx" else ""
        m[d] = int(o.version)
    if "" not in m:
        m[""] = onnx.defs.onnx_opset_version() if not proto.opset_import else 1
    return m
