"""The `deepsparse-cy` command line and the deepsparse_cy.tools functions behind it, on tiny
models (an onnx.helper MLP made here and the zoo's bert-tiny), with short timings."""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deepsparse_cy as ds
from deepsparse_cy import tools
from deepsparse_cy.cli import main

LAT_FIELDS = ("Latency mean:", "Latency median:", "Latency std:", "Latency p90:",
              "Latency p95:", "Latency p99:")


def _mlp(path, widths=(64, 64, 64, 16), seed=0):
    """x[N, 64] -> (MatMul + Add + Relu) x 2 -> MatMul: three prunable layers."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        inits.append(numpy_helper.from_array(np.full(b, 0.01, np.float32), f"b{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"mm{i}"], name=f"fc{i}"))
        last = i == len(widths) - 2
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], ["y" if last else f"a{i}"],
                                      name=f"bias{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}"))
            cur = f"r{i}"
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save_model(m, path)
    return str(path)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return _mlp(tmp_path_factory.mktemp("cli") / "mlp.onnx")


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- check-hardware ----------------------------------------------------------------------------
def test_check_hardware_text_and_json(capsys):
    code, out, _ = _run(capsys, "check-hardware")
    assert code == 0
    for field in ("CPU:", "Cores:", "Feature flags:", "avx2", "avx512_vnni", "avx_vnni",
                  "Kernel ISA:", "INT8:"):
        assert field in out
    assert f"Kernel ISA:       {ds.kernel_isa()}" in out
    code, out, _ = _run(capsys, "check-hardware", "--json")
    h = json.loads(out)
    assert h["kernel_isa"] == ds.kernel_isa()
    assert h["features"]["avx2"] == ds.cpu_features()["avx2"]
    assert h["logical_cores"] == os.cpu_count()
    vnni = ds.kernel_isa() in ("avx512_vnni", "amx")
    assert h["int8"] == ("native" if vnni else "emulated")
    if ds.kernel_isa() == "avx2":
        assert "vpmaddwd" in h["int8_detail"]
    if ds.kernel_isa() == "amx":
        assert "AMX" in h["int8_detail"] and "tdpbusd" in h["int8_detail"]


# -- benchmark ---------------------------------------------------------------------------------
def test_benchmark_sync_fields_and_json(capsys, mlp, tmp_path):
    js = tmp_path / "b.json"
    code, out, err = _run(capsys, "benchmark", mlp, "--batch-size", "2", "-t", "0.3",
                          "-w", "0.05", "--export-json", str(js))
    assert code == 0, err
    for field in ("Model:", "Batch size:       2", "Scenario:         sync", "Throughput:",
                  "items/s", "Iterations:") + LAT_FIELDS:
        assert field in out
    r = json.loads(js.read_text())
    assert r["batch_size"] == 2 and r["scenario"] == "sync" and r["num_streams"] == 1
    assert r["input_shapes"] == {"x": [2, 64]}
    assert r["iterations"] > 0 and r["throughput_items_per_s"] > 0
    lat = r["latency_ms"]
    assert lat["p99"] >= lat["p95"] >= lat["p90"] >= 0 and lat["mean"] > 0
    assert f"Iterations:       {r['iterations']}" in out
    # the progress bar is drawn only on a terminal: captured stderr has none
    assert "[#" not in err and "%" not in err


def test_benchmark_async_compare_onnxruntime(capsys, mlp):
    pytest.importorskip("onnxruntime")
    code, out, err = _run(capsys, "benchmark", mlp, "--scenario", "async", "--num-streams", "2",
                          "-t", "0.4", "-w", "0.05", "--compare", "onnxruntime", "-q")
    assert code == 0, err
    assert "Scenario:         async (2 streams)" in out
    assert "onnxruntime" in out and "deepsparse_cy / onnxruntime" in out
    assert "alternating block" in out


def test_benchmark_compare_without_onnxruntime(capsys, mlp, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import fails as if not installed
    r = tools.benchmark_model(mlp, time_s=0.2, warmup_s=0.0, compare=["onnxruntime"],
                              progress=False, quiet=True)
    assert r["comparisons"] == []
    assert any("onnxruntime is not installed" in n for n in r["notes"])
    assert "Note: onnxruntime is not installed" in tools.format_result(r)


def test_benchmark_zoo_against_dense_twin(capsys):
    code, out, err = _run(capsys, "benchmark", "zoo:bert-tiny-pruned90", "-i", "[1,16]",
                          "-t", "0.3", "-w", "0.05", "--compare", "dense", "-q")
    assert code == 0, err
    assert "Model:            zoo:bert-tiny-pruned90" in out
    assert "input_ids [1, 16]" in out
    assert "dense FP32 twin (zoo:bert-tiny)" in out
    assert "Speedup over the dense FP32 twin:" in out


def test_benchmark_python_api_async(mlp):
    r = tools.benchmark_model(mlp, scenario="async", num_streams=3, time_s=0.2, warmup_s=0.0,
                              input_shapes="[4,64]", progress=False, quiet=True)
    assert r["num_streams"] == 3 and r["batch_size"] == 4 and r["iterations"] >= 3


# -- profile -----------------------------------------------------------------------------------
def test_profile_table_and_json(capsys, mlp, tmp_path):
    code, out, err = _run(capsys, "profile", mlp, "-n", "2", "-q")
    assert code == 0, err
    for field in ("op", "kernel", "isa", "weight", "sparse", "b4occ", "ms", "GOP/s",
                  "dense ms", "speedup", "By op type:", "Whole-model speedup from sparsity:"):
        assert field in out
    assert "fc0" in out and "MatMul" in out and "64x64" in out
    js = tmp_path / "p.json"
    code, out, _ = _run(capsys, "profile", mlp, "-n", "2", "-q", "--json", str(js))
    p = json.loads(js.read_text())
    code, out2, _ = _run(capsys, "profile", mlp, "-n", "2", "-q", "--json")
    assert json.loads(out2)["model"] == p["model"]       # bare --json prints JSON on stdout
    eng = ds.compile_model(mlp, input_shapes=[[1, 64]])
    recs = eng.profile([np.zeros((1, 64), np.float32)], iterations=1)
    assert [r["name"] for r in p["nodes"]] == [r["name"] for r in recs]
    # the three MatMul (+Add +Relu) layers run fused (FusedMatMul) unless fusion is off
    mm = [r for r in p["nodes"] if r["op_type"] in ("MatMul", "FusedMatMul")]
    assert len(mm) == 3 and all(r["weight_shape"] for r in mm)
    assert mm[0]["flops"] == 2 * 1 * 64 * 64 and mm[0]["gops"] > 0
    assert abs(sum(r["pct"] for r in p["nodes"]) - 100.0) < 1e-6
    for key in ("index", "name", "op_type", "kernel", "isa", "weight_sparsity",
                "block4_occupancy", "time_ms"):
        assert key in p["nodes"][0]
    assert {s["op_type"] for s in p["by_op_type"]} == {r["op_type"] for r in p["nodes"]}
    assert p["sparsity_speedup"] > 0


def test_profile_plot(capsys, mlp, tmp_path):
    png = tmp_path / "p.png"
    code, out, err = _run(capsys, "profile", mlp, "-n", "1", "-q", "--plot", str(png))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 2 and "needs matplotlib" in err and "pip install" in err
        assert err.count("\n") == 1
        return
    assert code == 0 and png.stat().st_size > 1000


# -- sparsify ----------------------------------------------------------------------------------
def test_sparsify_block4_reports_layers_and_difference(capsys, mlp, tmp_path):
    dst = tmp_path / "s.onnx"
    js = tmp_path / "s.json"
    code, out, err = _run(capsys, "sparsify", mlp, str(dst), "--sparsity", "0.75",
                          "--pattern", "block4", "--override", "fc1=0.5", "--json", str(js), "-q")
    assert code == 0, err
    r = json.loads(js.read_text())
    by = {x["node"]: x for x in r["layers"]}
    assert by["fc0"]["sparsity"] == 0.0 and by["fc2"]["sparsity"] == 0.0   # first/last skipped
    assert by["fc1"]["sparsity"] == pytest.approx(0.5) and by["fc1"]["block4_occupancy"] == 0.5
    assert "fc1" in out and "50.0%" in out and "Output difference" in out
    diff = r["difference"]["output model"][0]
    assert diff["output"] == "y" and diff["max_abs"] > 0 and 0 < diff["cosine"] <= 1 + 1e-9
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(dst)).graph.initializer}
    assert np.mean(w["w1"] == 0) == pytest.approx(0.5)


def test_sparsify_quantize_int8_runs_in_onnxruntime(capsys, mlp, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    dst = tmp_path / "q.onnx"
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((3, 1, 64)).astype(np.float32))
    code, out, err = _run(capsys, "sparsify", mlp, str(dst), "--sparsity", "0.5",
                          "--no-skip-first-last", "--quantize", "int8",
                          "--calibration-data", str(calib), "-q")
    assert code == 0, err
    assert "3 samples from" in out and "pruned FP32" in out and "output model" in out
    m = onnx.load(str(dst))
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    y = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.shape == (1, 16)


# -- user mistakes: one line on stderr, non-zero exit, no traceback ------------------------------
@pytest.mark.parametrize("argv,needle", [
    (["benchmark", "no/such/model.onnx"], "model file not found"),
    (["benchmark", "zoo:not-a-model"], "unknown built-in model 'not-a-model'"),
    (["profile", "zoo:resnet51"], "unknown built-in model"),
    (["benchmark", "{mlp}", "--input-shapes", "1x64"], "bad --input-shapes"),
    (["benchmark", "{mlp}", "--input-shapes", "[1,64],[1,64]"], "the model has 1 inputs"),
    (["benchmark", "{mlp}", "--input-shapes", "[1,32]"], "conflicts with the model's fixed shape"),
    (["benchmark", "{mlp}", "--time", "soon"], "--time must be a number"),
    (["benchmark", "{mlp}", "--num-streams", "2"], "needs --scenario async"),
    (["benchmark", "{mlp}", "--compare", "tensorflow"], "--compare 'tensorflow'"),
    (["benchmark", "{mlp}", "--compare", "dense"], "needs a zoo:NAME model"),
    (["sparsify", "{mlp}", "/no/such/dir/out.onnx"], "output folder does not exist"),
    (["sparsify", "{mlp}", "{tmp}/o.onnx", "--override", "fc1"], "expected NAME=SPARSITY"),
    (["sparsify", "{mlp}", "{tmp}/o.onnx", "--skip", "nope"], "match no prunable layer"),
    (["sparsify", "{mlp}", "{tmp}/o.onnx", "--sparsity", "1.2"], "must be in [0, 1)"),
    (["sparsify", "{mlp}", "{tmp}/o.onnx", "--quantize", "int8", "--calibration-data",
      "{tmp}/none.npz"], "calibration data file not found"),
    (["frobnicate"], "invalid choice"),
])
def test_user_mistakes(capsys, mlp, tmp_path, argv, needle):
    argv = [a.format(mlp=mlp, tmp=tmp_path) for a in argv]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("deepsparse-cy: error: ") and err.count("\n") == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_not_an_onnx_file(capsys, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf at all" * 10)
    code, _, err = _run(capsys, "benchmark", str(bad))
    assert code == 2 and "cannot read ONNX model" in err and err.count("\n") == 1


def test_console_script_exit_status_without_traceback(tmp_path):
    env = dict(os.environ)
    env.pop("DEEPSPARSE_CY_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "deepsparse_cy.cli", "benchmark",
                        str(tmp_path / "missing.onnx")], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == f"deepsparse-cy: error: model file not found: {tmp_path / 'missing.onnx'}"
    assert p.stdout == ""


def test_parse_input_shapes():
    assert tools.parse_input_shapes("[1,128],[1, 128]") == [[1, 128], [1, 128]]
    assert tools.parse_input_shapes("1,3,224,224") == [[1, 3, 224, 224]]
    for bad in ("", "[]", "[1,,2]", "[1,0]", "1x2", "[1,2]x"):
        with pytest.raises(tools.UsageError):
            tools.parse_input_shapes(bad)
