"""benchmarks/synthetic.py: the table from per-face records, the cache, and a tiny end-to-end
run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "synthetic.py"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("synthetic")


def record(bench, side, mad, seconds):
    return {"scores": {m: {"SIDE": side[m], "MAD_deg": mad[m]} for m in bench.METHODS},
            "seconds": {"no GAN": seconds, "GAN2Shape": 2 * seconds, "inversion": 1.0},
            "inversion_psnr_db": 20.0}


def test_table_means_and_sample_deviations(bench):
    settings = {"preset": "demo", "overrides": [], "gan": "abc", "invert_steps": 3}
    a = record(bench, dict.fromkeys(bench.METHODS, 0.01), dict.fromkeys(bench.METHODS, 10.0), 4)
    b = record(bench, dict.fromkeys(bench.METHODS, 0.02), dict.fromkeys(bench.METHODS, 20.0), 6)
    b["scores"]["GAN2Shape"] = {"SIDE": 0.005, "MAD_deg": 30.0}
    unfinished = {"scores": {}, "seconds": {}}
    text = bench.table({0: a, 1: b, 2: unfinished}, settings, "cpu", gan_iteration=7)
    assert "N = 2 held-out test faces 0..1" in text and "training iteration 7" in text
    # mean 1.5e-2 = 1.500 x1e-2; sample std of (1, 2) = 0.707
    assert "| constant depth | 1.500 ± 0.707 | 15.00 ± 7.07 | - |" in text
    assert "| no GAN | 1.500 ± 0.707 | 15.00 ± 7.07 | 5 ± 1 |" in text
    assert "| GAN2Shape | 0.750 ± 0.354 | 20.00 ± 14.14 | 10 ± 3 |" in text
    assert "better than no GAN on 1/2 faces by SIDE and 0/2 by MAD" in text
    assert bench.table({2: unfinished}, settings, "cpu").startswith("No test face")


def test_undefined_scores_count_as_failures(bench):
    settings = {"preset": "demo", "overrides": [], "gan": "abc", "invert_steps": 3}
    ok = dict.fromkeys(bench.METHODS, 0.01)
    records = {i: record(bench, ok, dict.fromkeys(bench.METHODS, 10.0 + i), 4) for i in range(3)}
    records[1]["scores"]["no GAN"] = {"SIDE": float("nan"), "MAD_deg": float("nan")}
    text = bench.table(records, settings, "cpu")
    assert "| no GAN | 1.000 ± 0.000 (1 failed) | 11.00 ± 1.41 (1 failed) |" in text
    assert "better than no GAN on 1/3 faces by SIDE and 1/3 by MAD" in text


def test_a_record_under_other_settings_is_not_reused(bench, tmp_path):
    path = tmp_path / "test0000.json"
    path.write_text(json.dumps({"settings": {"a": 1}, "scores": {"no GAN": {}}, "seconds": {}}))
    assert bench.load_record(path, {"a": 1})["scores"] == {"no GAN": {}}
    assert bench.load_record(path, {"a": 2})["scores"] == {}
    path.write_text("{not json")
    assert bench.load_record(path, {"a": 1})["scores"] == {}


@pytest.mark.slow
def test_end_to_end_tiny_schedule_and_resume(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, str(SCRIPT), "--images", "2", "--out", str(out), "--device", "cpu",
           "--invert-steps", "2", "--set", "num_stage=1", "--set", "prior_iters=2",
           "--set", "stage_len_dict={step1: 1, step2: 1, step3: 1}", "--set", "collect_iters=1"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "N = 2 held-out test faces 0..1" in first.stdout
    for method in ("constant depth", "average ground-truth depth", "ellipsoid prior",
                   "no GAN", "GAN2Shape"):
        assert f"| {method} |" in (out / "table.md").read_text()
    cached = (out / "images" / "test0001.json").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert (out / "images" / "test0001.json").read_text() == cached  # nothing recomputed
    assert second.stdout == first.stdout


def test_oracle_rows_appear_when_every_face_has_them(bench):
    settings = {"preset": "demo", "overrides": [], "gan": "abc", "invert_steps": 3}
    records = {i: record(bench, dict.fromkeys(bench.METHODS, 0.01),
                         dict.fromkeys(bench.METHODS, 10.0), 4) for i in range(2)}
    perfect, with_light = bench.ORACLES
    for i, r in records.items():
        r["scores"][perfect] = {"SIDE": 0.004 * (i + 1), "MAD_deg": 8.0}
        r["seconds"][perfect] = 3.0
    records[0]["scores"][with_light] = {"SIDE": 0.001, "MAD_deg": 5.0}
    records[0]["seconds"][with_light] = 3.0
    text = bench.table(records, settings, "cpu")
    assert "| perfect GAN | 0.600 ± 0.283 | 8.00 ± 0.00 | 3 ± 0 |" in text
    assert with_light not in text  # face 1 has not run it yet


def test_baselines_only_scores_the_family_asked_for(tmp_path):
    """--baselines-only: only the three baselines; --family v2 (the embedded model's)
    scores exactly what the default run scores, v1 other faces with v1's preset."""
    from gan2shape.eval import heldout

    def run(name: str, *args: str) -> tuple[str, list[dict]]:
        out = tmp_path / name
        subprocess.run([sys.executable, str(SCRIPT), "--baselines-only", "--images", "2",
                        "--out", str(out), *args], check=True, capture_output=True)
        return ((out / "table.md").read_text(),
                [json.loads((out / "images" / f"test{i:04d}.json").read_text())["scores"]
                 for i in range(2)])

    default, v1, v2 = run("default"), run("v1", "--family", "v1"), run("v2", "--family", "v2")
    assert all(set(scores) == set(heldout.BASELINES) for scores in v1[1])
    assert v2[1] == default[1] and v2[1] != v1[1]
    assert "family v1" in v1[0] and "preset demo_v1" in v1[0] and "| no GAN" not in v1[0]
    assert "family v2" in v2[0] and "preset demo." in v2[0]


def test_another_family_needs_its_own_gan(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--family", "v1", "--images", "1",
                             "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "give --gan with a GAN trained on v1, or --baselines-only" in result.stderr


def test_family_oracle_row_and_its_setting_checks(bench, tmp_path):
    settings = {"preset": "demo", "overrides": [], "gan": "abc", "invert_steps": 3,
                "split": "validation", "family": "v2"}
    records = {i: {"scores": {m: {"SIDE": 0.01, "MAD_deg": 10.0} for m in bench.METHODS[:3]},
                   "seconds": {}} for i in range(2)}
    for i, r in records.items():
        r["scores"][bench.FAMILY_ORACLE] = {"SIDE": 0.002 * (i + 1), "MAD_deg": 9.0}
        r["seconds"][bench.FAMILY_ORACLE] = 5.0
    text = bench.table(records, settings, "cpu", methods=bench.METHODS[:3])
    assert "held-out validation faces 0..1 (procedural family v2, seed 2)" in text
    assert "| family GAN | 0.300 ± 0.141 | 9.00 ± 0.00 | 5 ± 0 |" in text
    for extra, message in ((["--family-oracle", "--set", "pseudo_views=true"],
                            "add --set pseudo_views=false"),
                           (["--oracles-only"], "--oracles-only needs --oracle")):
        run = subprocess.run([sys.executable, str(SCRIPT), "--images", "1", "--out",
                              str(tmp_path / "x"), *extra], capture_output=True, text=True)
        assert run.returncode != 0 and message in run.stderr
