import json

import pytest

from course_utils.claims import Claim, judge, load_claims, results_dir, save_claims


def test_judge_covers_every_verdict():
    assert judge(1.2, 0.5) == "confirmed"
    assert judge(-1.2, 0.5) == "not reproduced"
    assert judge(-1.2, 0.5, expected="negative") == "confirmed"
    assert judge(0.4, 0.5) == "inside the noise"
    assert judge(0.4, 0.5, expected="none") == "confirmed"
    assert judge(2.0, 0.5, expected="none") == "not reproduced"
    with pytest.raises(ValueError, match="expected"):
        judge(1.0, 0.1, expected="up")
    with pytest.raises(ValueError, match="finite"):
        judge(float("nan"), 0.1)
    assert judge(5.0, float("nan")) == "inside the noise"  # one seed: no spread to compare with


def test_claim_validates_its_fields():
    with pytest.raises(ValueError, match="C04"):
        Claim("4", "x", measured="1", verdict="confirmed")
    with pytest.raises(ValueError, match="verdict"):
        Claim("C04", "x", measured="1", verdict="maybe")
    with pytest.raises(ValueError, match="measured"):
        Claim("C04", "x", measured=" ", verdict="confirmed")


def test_save_prints_and_round_trips(tmp_path, capsys):
    claims = [Claim("C05", "b", measured="+0.42 ± 0.10", verdict="confirmed"),
              Claim("C04", "a", measured="-1.15 ± 0.30", verdict="confirmed", note="why")]
    path = save_claims("02", claims, profile="cpu", path=tmp_path / "02.json")
    out = capsys.readouterr().out
    assert "C04 [confirmed] a: -1.15 ± 0.30" in out and "+0.42 ± 0.10" in out
    data = json.loads(path.read_text())
    assert data["chapter"] == "02" and data["profile"] == "cpu"
    rows = load_claims(tmp_path)
    assert [r["id"] for r in rows] == ["C04", "C05"] and rows[0]["note"] == "why"
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write leaves no temp file
    with pytest.raises(ValueError, match="once"):
        save_claims("02", claims + claims[:1], path=tmp_path / "x.json")


def test_smoke_results_never_land_in_the_book(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_RESULTS_DIR", raising=False)
    monkeypatch.setenv("COURSE_RUNS_DIR", str(tmp_path))
    assert results_dir("smoke") == tmp_path / "results"
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(tmp_path / "r"))
    assert results_dir("cpu") == tmp_path / "r"


def test_json_format_is_the_one_the_page_reads(tmp_path, capsys):
    path = save_claims("03", [Claim("C10", "c", measured="1 ± 0", verdict="inside the noise", numbers={"d": 1.0})],
                       profile="cpu", path=tmp_path / "03.json")
    data = json.loads(path.read_text())
    assert list(data) == ["chapter", "profile", "date", "claims"]
    assert data["claims"] == [{"id": "C10", "claim": "c", "measured": "1 ± 0", "verdict": "inside the noise",
                               "note": "", "numbers": {"d": 1.0}}]


def test_course_root_is_the_checkout_holding_a_folder(tmp_path):
    from pathlib import Path

    from course_utils.claims import course_root

    here = Path(__file__).resolve().parent
    assert course_root(here) == here.parent
    assert course_root(tmp_path) is None
