"""Claims: arms and comparisons (pairing by seed, too few values, field checks), the JSON round trip, and the
recompute command (on book/results, and catching an edited value). The statistics are in test_intervals.py."""

import json
from pathlib import Path

import numpy as np
import pytest

from course_utils import claims as cl
from course_utils.claims import Arm, Budget, Claim, Comparison, check_results, load_claims, results_dir, save_claims
from course_utils.intervals import interval

ROOT = Path(__file__).resolve().parent.parent
A, B, SEEDS = [88.0, 88.6, 87.5, 88.9], [86.9, 87.0, 86.1, 87.8], [0, 1, 2, 3]


def test_paired_aligns_by_seed_and_refuses_different_seeds():
    shuffled = Arm("a", [A[2], A[0], A[3], A[1]], seeds=[2, 0, 3, 1])
    assert Comparison(shuffled, Arm("b", B, SEEDS), "greater", paired=True).ci95 == pytest.approx(
        interval(A, B, True, SEEDS, SEEDS)[1])
    with pytest.raises(ValueError, match="different seeds"):
        Comparison(Arm("a", A, SEEDS), Arm("b", B, [0, 1, 2, 7]), "greater", paired=True)
    with pytest.raises(ValueError, match="seeds"):
        Comparison(Arm("a", A), Arm("b", B), "greater", paired=True)


def test_fewer_than_three_values_are_shown_not_judged():
    c = Comparison(Arm("one seed", [91.0], [0]), Arm("b", B, SEEDS), "greater")
    assert c.ci95 is None and c.verdict == "not judged" and c.diff == pytest.approx(91.0 - np.mean(B))
    two = Comparison(Arm("a", A[:2], [0, 1]), Arm("b", B[:2], [0, 1]), "greater", paired=True)
    assert two.verdict == "not judged" and two.size is None
    assert Comparison(Arm("a", A[:3]), Arm("b", B[:3]), "greater").verdict in ("supported", "inconclusive")


def _claims():
    a, b = Arm("max-pool", A, SEEDS), Arm("stride", B, SEEDS)
    eq = Comparison(Arm("GELU", [88.1, 88.2, 88.0], [0, 1, 2]), Arm("ReLU", [88.0, 88.3, 88.1], [0, 1, 2]),
                    "equivalent", margin=0.5, paired=True, source_effect=0.02, metric="test accuracy")
    return [Claim("C04", "max-pool beats stride", [Comparison(a, b, "greater", paired=True, source_effect=1.15), eq],
                  source="−1.15 (Table 1)", budget=Budget(1200, 128, 10), section="sec-c04"),
            Claim("C09", "more layers help", [Comparison(Arm("deep", [91.0], [0]), b, "greater")])]


def test_save_prints_and_round_trips(tmp_path, capsys):
    claims = _claims()
    path = save_claims("02", claims, profile="cpu", path=tmp_path / "02.json")
    out = capsys.readouterr().out
    assert f"C04 [{claims[0].verdict}] max-pool beats stride" in out and "C09 [not judged]" in out
    assert cl.describe(claims[0].comparisons[0]) in out
    data = json.loads(path.read_text())
    assert list(data) == ["chapter", "profile", "date", "format", "claims"] and data["format"] == cl.FORMAT
    c04 = data["claims"][0]
    assert c04["budget"] == {"optimizer_steps": 1200, "batch_size": 128, "epochs": 10}
    first = c04["comparisons"][0]
    assert first["a"] == {"label": "max-pool", "values": A, "seeds": SEEDS} and first["paired"] is True
    assert first["ci95"] == pytest.approx(list(claims[0].comparisons[0].ci95)) and first["verdict"] == "supported"
    assert c04["comparisons"][1]["margin"] == 0.5 and c04["verdict"] == claims[0].verdict
    for stored, c in zip(c04["comparisons"], claims[0].comparisons):
        assert Comparison.from_json(stored) == c  # JSON round trip
    assert [r["id"] for r in load_claims(tmp_path)] == ["C04", "C09"]
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temp file
    with pytest.raises(ValueError, match="once"):
        save_claims("02", claims + claims[:1], path=tmp_path / "x.json")


def test_arm_from_run_grid_rows():
    rows = [{"variant": v, "seed": s, "acc": float(10 * i + s)} for i, v in enumerate(["x", "y"]) for s in (2, 0, 1)]
    arm = Arm.from_rows(rows, "y", "acc", label="Y")
    assert arm == Arm("Y", [10.0, 11.0, 12.0], [0, 1, 2])
    pd = pytest.importorskip("pandas")
    assert Arm.from_rows(pd.DataFrame(rows), "y", "acc", label="Y") == arm
    with pytest.raises(ValueError, match="variant"):
        Arm.from_rows(rows, "z", "acc")


def test_recompute_command_passes_on_the_books_results(capsys):
    assert cl.main(["--check", str(ROOT / "book" / "results")]) == 0, capsys.readouterr().err


def test_recompute_command_catches_an_edited_value(tmp_path, capsys):
    save_claims("02", _claims(), profile="cpu", path=tmp_path / "02.json")
    assert cl.main(["--check", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "02.json").read_text())
    data["claims"][0]["comparisons"][0]["a"]["values"][0] = 80.0  # an edited value: the stored interval no longer follows
    (tmp_path / "02.json").write_text(json.dumps(data))
    capsys.readouterr()
    assert cl.main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "02.json C04 comparison 1" in err and "ci95" in err and "verdict" in err


def test_old_format_files_are_not_yet_measured(tmp_path, capsys):
    (tmp_path / "01.json").write_text(json.dumps({"chapter": "01", "profile": "cpu", "date": "2026-01-01", "claims": [
        {"id": "C01", "claim": "x", "measured": "1 ± 0", "verdict": "confirmed", "note": "", "numbers": {}}]}))
    assert check_results(tmp_path) == ([], ["01.json C01"])
    assert cl.main(["--check", str(tmp_path)]) == 0 and "not yet measured" in capsys.readouterr().out


def test_smoke_results_never_land_in_the_book(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_RESULTS_DIR", raising=False)
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    assert results_dir("smoke") == tmp_path / "results"
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "r"))
    assert results_dir("cpu") == tmp_path / "r"


def test_claim_and_comparison_validate_their_fields():
    a, b = Arm("a", A), Arm("b", B)
    with pytest.raises(ValueError, match="C04"):
        Claim("4", "x", [Comparison(a, b, "greater")])
    with pytest.raises(ValueError, match="Comparison"):
        Claim("C04", "x", [])
    with pytest.raises(ValueError, match="reason"):
        Comparison(a, b, "not_testable")
    with pytest.raises(ValueError, match="margin"):
        Comparison(a, b, "greater", margin=0.5)
    with pytest.raises(ValueError, match="margin"):
        Comparison(a, b, "equivalent")  # an equivalence claim needs its margin
    with pytest.raises(ValueError, match="finite"):
        Arm("a", [float("nan")])


def test_course_root_is_the_checkout_holding_a_folder(tmp_path):
    here = Path(__file__).resolve().parent
    assert cl.course_root(here) == here.parent
    assert cl.course_root(tmp_path) is None
