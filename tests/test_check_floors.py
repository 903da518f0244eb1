"""tools/check_floors.py: ratios from a pytest-benchmark JSON against benchmarks/floors.json."""
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("check_floors",
                                               os.path.join(ROOT, "tools", "check_floors.py"))
cf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cf)


def _results(tmp_path, ratios):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"benchmarks": [{"name": "t", "extra_info": {"ratios": ratios}}]}))
    return str(p)


def _floors(tmp_path, floors):
    p = tmp_path / "f.json"
    p.write_text(json.dumps({"floors": floors}))
    return str(p)


def test_pass_fail_missing_and_skipped(tmp_path, capsys):
    floors = _floors(tmp_path, {"a.x": {"floor": 1.0}, "b.y": {"floor": 0.5, "set": "full"},
                                "c.z": {"floor": 0.5, "requires": "no_such_module_xyz"}})
    assert cf.main([_results(tmp_path, {"a.x": 1.2, "extra": 3.0}), "--floors", floors]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "full set only" in out and "no_such_module_xyz not installed" in out
    assert "no floor" in out                                   # unknown ratios are listed
    assert cf.main([_results(tmp_path, {"a.x": 0.9}), "--floors", floors]) == 1   # regression
    assert "FAIL" in capsys.readouterr().out
    assert cf.main([_results(tmp_path, {}), "--floors", floors]) == 1              # not measured
    assert cf.main([_results(tmp_path, {}), "--floors", floors, "--full"]) == 1


def test_repository_floors_are_well_formed():
    with open(os.path.join(ROOT, "benchmarks", "floors.json")) as fh:
        floors = json.load(fh)["floors"]
    assert floors
    for name, f in floors.items():
        assert "." in name and float(f["floor"]) > 0
        assert all(float(m) >= float(f["floor"]) for m in f.get("measured", []))


def test_suggest(tmp_path, capsys):
    floors = _floors(tmp_path, {})
    assert cf.main([_results(tmp_path, {"a.x": 2.0}), "--floors", floors, "--suggest"]) == 0
    assert json.loads(capsys.readouterr().out)["a.x"]["floor"] == 1.2
