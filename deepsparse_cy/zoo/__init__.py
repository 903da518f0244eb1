"""Built-in models, generated locally (no downloads): a name registry with a file cache.

    from deepsparse_cy import zoo
    model = zoo.get_model("bert-base-block4-pruned90-quant")     # onnx.ModelProto
    path = zoo.model_path("resnet50")                              # cached .onnx file
    feeds = zoo.example_inputs("bert-base", batch=1, seq=128)      # {input name: array}

Names: BASE[-block4][-prunedNN][-quant] for BASE in bert-base, minilm, resnet50, mobilenetv2,
yolov5s, yolov8n, mbv3-ocr (plus bert-tiny for quick tests); list_models() gives the canonical list. Keyword
overrides change the generator's configuration (layers=2, hidden=64, image=128, ...); such models
are not cached unless cache=True.

Files are cached under $DEEPSPARSE_CY_CACHE_DIR, else $XDG_CACHE_HOME/deepsparse_cy/zoo, else
~/.cache/deepsparse_cy/zoo, keyed by name, ZOO_VERSION and overrides (and the onnxruntime version
for quantized models, whose calibration it performs). Bump ZOO_VERSION when a generator changes.
"""
import hashlib
import json
import os
import re
import shutil
import tempfile

import numpy as np
import onnx

from .bert import BertConfig, bert_config, build_bert  # noqa: F401
from .mbv3_ocr import build_mbv3_ocr
from .mobilenet import build_mobilenetv2
from .prune import block4_occupancy, layer_sparsity, prunable_layers, prune_array  # noqa: F401
from .prune import prune_model
from .quantize import quantize_model
from .resnet import build_resnet
from .yolo import build_yolov5
from .yolov8 import build_yolov8

ZOO_VERSION = 1

BASES = ("bert-base", "minilm", "resnet50", "mobilenetv2", "yolov5s", "yolov8n", "mbv3-ocr")
VARIANTS = ("", "-pruned90", "-pruned95", "-pruned90-quant", "-pruned95-quant",
            "-block4-pruned90-quant", "-block4-pruned95-quant")

_BUILDERS = {
    "bert-base": lambda **kw: build_bert(bert_config("bert-base", **kw), name="bert-base"),
    "minilm": lambda **kw: build_bert(bert_config("minilm", **kw), name="minilm"),
    "bert-tiny": lambda **kw: build_bert(bert_config("bert-tiny", **kw), name="bert-tiny"),
    "resnet50": lambda **kw: build_resnet(**kw),
    "mobilenetv2": lambda **kw: build_mobilenetv2(**kw),
    "yolov5s": lambda **kw: build_yolov5(**kw),
    # dynamic height/width exports (issue #5): anchors / resize targets computed in the graph
    "yolov8n": lambda **kw: build_yolov8(**kw),
    "mbv3-ocr": lambda **kw: build_mbv3_ocr(**kw),
}

_NAME_RE = re.compile(r"^(?P<base>[a-z0-9-]+?)(?P<block4>-block4)?(?:-pruned(?P<pct>\d{1,2}))?"
                      r"(?P<quant>-quant)?$")


def list_models(include_test=False):
    names = [b + v for b in BASES for v in VARIANTS]
    if include_test:
        names += ["bert-tiny" + v for v in VARIANTS]
    return names


def parse_name(name):
    """'bert-base-block4-pruned90-quant' -> ('bert-base', 'block4', 0.9, True)."""
    if name.startswith("zoo:"):
        name = name[4:]
    m = _NAME_RE.match(name)
    if not m or m.group("base") not in _BUILDERS:
        raise KeyError(f"unknown built-in model {name!r}; known: {', '.join(list_models())}")
    if m.group("block4") and not m.group("pct"):
        raise KeyError(f"{name!r}: -block4 needs a -prunedNN sparsity")
    pct = m.group("pct")
    return (m.group("base"), "block4" if m.group("block4") else "unstructured",
            int(pct) / 100.0 if pct else 0.0, bool(m.group("quant")))


def cache_dir():
    d = os.environ.get("DEEPSPARSE_CY_CACHE_DIR")
    if not d:
        root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(root, "deepsparse_cy", "zoo")
    return d


def _cache_key(name, overrides):
    base, _, _, quant = parse_name(name)
    parts = {"name": name, "zoo": ZOO_VERSION, "onnx": onnx.__version__,
             "overrides": sorted((k, repr(v)) for k, v in overrides.items())}
    if quant:
        import onnxruntime
        parts["onnxruntime"] = onnxruntime.__version__
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}-v{ZOO_VERSION}-{digest}.onnx"


def generate(name, **overrides):
    """Build the model from scratch (no cache)."""
    base, pattern, sparsity, quant = parse_name(name)
    model = _BUILDERS[base](**overrides)
    if sparsity:
        model, _ = prune_model(model, sparsity, pattern, inplace=True)
    if quant:
        model = quantize_model(model, seq=_calib_seq(base, overrides))
    return model


def _calib_seq(base, overrides):
    if base in ("bert-base", "minilm", "bert-tiny"):
        return min(128, overrides.get("max_pos", 512))
    return 128


def model_path(name, cache=None, **overrides):
    """Path of the cached .onnx file for `name`, generated on first use."""
    if cache is False:
        raise ValueError("model_path needs the cache; use get_model(cache=False) instead")
    d = cache_dir()
    path = os.path.join(d, _cache_key(name.removeprefix("zoo:"), overrides))
    if not os.path.exists(path):
        os.makedirs(d, exist_ok=True)
        model = generate(name, **overrides)
        # write-then-rename so concurrent processes never read a half-written file
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(model.SerializeToString())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def get_model(name, cache=None, **overrides):
    """onnx.ModelProto for a built-in model. cache=None caches canonical models only."""
    if cache is None:
        cache = not overrides
    if not cache:
        return generate(name, **overrides)
    return onnx.load_model(model_path(name, **overrides))


def save_model(name, path, **overrides):
    """Write the built-in model `name` to `path` (copied from the cache)."""
    src = model_path(name, **overrides)
    shutil.copyfile(src, path)
    return path


# ---------------------------------------------------------------------------------------------
def _gather_vocab(model, input_name):
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == input_name \
                and n.input[0] in inits:
            return int(inits[n.input[0]].dims[0])
    return None


def example_inputs(model_or_name, batch=1, seq=128, seed=0):
    """Valid feeds {input name: array} for a model or built-in name: token ids within the
    vocabulary, an attention mask of ones with trailing padding on all rows but the first, two
    token-type segments, images (uniform [0, 1] for 'images' inputs like YOLO's, else
    standard-normal as for normalized ImageNet inputs). Symbolic dims: the first -> batch,
    others -> seq."""
    model = model_or_name
    if isinstance(model_or_name, str):
        model = get_model(model_or_name)
    rng = np.random.default_rng(seed)
    init_names = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        shape = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            else:
                shape.append(batch if i == 0 else seq)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        lname = vi.name.lower()
        if np.issubdtype(dtype, np.integer):
            if "mask" in lname:
                x = np.ones(shape, dtype)
                if len(shape) == 2:
                    s = shape[1]
                    for r in range(1, shape[0]):
                        # row r keeps a shrinking prefix, at least one token
                        x[r, max(1, s - (r * s) // (2 * shape[0])):] = 0
            elif "token_type" in lname or "segment" in lname:
                x = np.zeros(shape, dtype)
                if len(shape) == 2:
                    x[:, shape[1] // 2:] = 1
            else:
                vocab = _gather_vocab(model, vi.name) or 30522
                x = rng.integers(0, vocab, size=shape, dtype=dtype)
        elif "image" in lname:
            x = rng.random(size=shape, dtype=np.float32).astype(dtype)
        else:
            x = rng.standard_normal(size=shape, dtype=np.float32).astype(dtype)
        feeds[vi.name] = x
    return feeds


__all__ = ["get_model", "save_model", "model_path", "list_models", "example_inputs", "generate",
           "parse_name", "cache_dir", "prune_model", "quantize_model", "layer_sparsity",
           "build_bert", "build_resnet", "build_mobilenetv2", "build_yolov5", "build_yolov8",
           "build_mbv3_ocr", "ZOO_VERSION"]
