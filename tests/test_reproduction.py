"""The reproduction page: generated from the chapters' result files, whose numbers are in the notebooks."""

import json
import re
from pathlib import Path

import pytest

from course_utils import reproduction
from course_utils.claims import FORMAT, Arm, Budget, Claim, Comparison, describe, save_claims
from course_utils.reproduction import render_reproduction

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "book" / "results"
CLAIMS = ROOT / "book" / "claims.json"
JSONS = sorted(RESULTS.glob("*.json"))
SHARED = ROOT.parent / "shared" / "CLAIMS.md"


def _stream_text(nb: dict) -> str:
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                out.append(o["text"] if isinstance(o["text"], str) else "".join(o["text"]))
    return "".join(out)


def test_claim_list_has_every_id_once():
    claims = json.loads(CLAIMS.read_text())["claims"]
    assert [c["id"] for c in claims] == [f"C{i:02d}" for i in range(1, 36)]
    assert all(1 <= c["chapter"] <= 7 and len(c["claim"]) > 20 for c in claims)


@pytest.mark.skipif(not SHARED.is_file(), reason="the shared claim list is not beside this checkout")
def test_claim_list_matches_the_shared_one():
    ours = {c["id"]: c["chapter"] for c in json.loads(CLAIMS.read_text())["claims"]}
    assert reproduction._shared_claims(SHARED) == ours


@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.name)
def test_every_measured_number_is_in_the_notebook_outputs(path):
    data = json.loads(path.read_text())
    notebooks = sorted((ROOT / "chapters").glob(f"{data['chapter']}_*.ipynb"))
    assert len(notebooks) == 1, f"{path.name}: no single chapters/{data['chapter']}_*.ipynb wrote it"
    text = _stream_text(json.loads(notebooks[0].read_text()))
    for c in data["claims"]:
        if data.get("format", 1) >= FORMAT:  # the lines save_claims prints
            comps = [Comparison.from_json(x) for x in c["comparisons"]]
            lines = [f"{c['id']} [{c['verdict']}] {c['text']}", *(describe(x) for x in comps)]
        else:  # a file from before issue 17, shown as "not yet measured"
            lines = [c["measured"], f"{c['id']} [{c['verdict']}] {c['claim']}: {c['measured']}"]
        for line in lines:
            assert line in text, (f"{path.name} {c['id']}: '{line}' is not in the outputs of {notebooks[0].name}; "
                                  "re-execute the chapter (make execute) so the JSON and the notebook come from the same run")
    profile = re.search(r"profile=(\w+) \| device=", text)
    assert profile and profile.group(1) == data["profile"], f"{path.name} says profile {data['profile']}"


def test_reproduction_page_is_up_to_date():
    page = ROOT / "book" / "reproduction.md"
    assert page.is_file(), "run `python -m course_utils.reproduction`"
    assert page.read_text() == render_reproduction(CLAIMS, RESULTS, ROOT), \
        "book/reproduction.md is out of date: run `python -m course_utils.reproduction` (make book does)"


def _save_02(tmp_path, section="", note=""):
    seeds = [0, 1, 2]
    maxpool, stride = Arm("max-pool", [88.0, 88.6, 87.5], seeds), Arm("stride", [86.9, 87.0, 86.1], seeds)
    gelu, relu = Arm("GELU", [88.1, 88.2, 88.0], seeds), Arm("ReLU", [88.0, 88.3, 88.1], seeds)
    claims = [Claim("C04", "max-pool vs stride", [Comparison(maxpool, stride, "greater", paired=True, source_effect=1.15)],
                    source="stride − max-pool = −1.15 | Table 1", budget=Budget(1200, 128, 10), section=section,
                    note=note),
              Claim("C07", "gelu vs relu", [Comparison(gelu, relu, "equivalent", margin=0.5, paired=True,
                                                       source_effect=0.02)], budget=Budget(1200, 128, 10)),
              Claim("C09", "more layers", [Comparison(Arm("deep", [91.0], [0]), stride, "greater")])]
    save_claims("02", claims, profile="cpu", path=tmp_path / "02.json")
    return claims


def test_page_shows_measurements_and_unmeasured_claims(tmp_path, capsys):
    claims = _save_02(tmp_path, note="on Fashion-MNIST")
    (tmp_path / "06.json").write_text(json.dumps({"chapter": "06", "profile": "cpu", "date": "2026-01-01", "claims": [
        {"id": "C23", "claim": "x", "measured": "1 ± 0", "verdict": "confirmed", "note": "", "numbers": {}}]}))
    capsys.readouterr()
    text = render_reproduction(CLAIMS, tmp_path, ROOT)
    lines = text.splitlines()
    c04 = claims[0].comparisons[0]
    lo, hi = c04.ci95
    assert any(ln.startswith("**C04**") and "Verdict: **supported**" in ln for ln in lines)
    row = next(ln for ln in lines if ln.startswith("| max-pool − stride |"))
    assert f"{c04.diff:+.3g} [{lo:+.3g}, {hi:+.3g}]" in row and "| 3 pairs |" in row and "| +1.15 |" in row
    assert f"| {c04.size} | supported |" in row
    assert "Source: stride − max-pool = −1.15 \\| Table 1." in text  # a '|' in the text does not break the table
    assert "1200 optimizer steps, batch 128, 10 epochs" in text and "*on Fashion-MNIST*" in text
    assert "| GELU − ReLU | " in text and "equivalent ±0.5" in text
    assert "| deep − stride | " in text and "(no interval) | 1 + 3 |" in text and "| not judged |" in text
    assert "*not yet measured* (not measured by chapter 2)" in next(ln for ln in lines if ln.startswith("**C05**"))
    assert "not yet re-executed" in next(ln for ln in lines if ln.startswith("**C23**"))
    assert "*not yet measured* (not measured by chapter 1)" in next(ln for ln in lines if ln.startswith("**C01**"))
    assert "| supported | 2 |" in text and "| not judged | 1 |" in text and "| not yet measured | 32 |" in text
    assert "figures/forest_02.png" in text and "forest_06" not in text
    assert "## How a claim is judged" in text and "Three seeds is the least" in text
    assert text == render_reproduction(CLAIMS, tmp_path, ROOT), "the page must be the same on every run"


def test_section_links_must_exist_in_the_chapter(tmp_path, capsys):
    _save_02(tmp_path, section="sec-no-such-label")
    with pytest.raises(ValueError, match="sec-no-such-label"):
        render_reproduction(CLAIMS, tmp_path, ROOT)


def test_unknown_claim_id_is_an_error(tmp_path, capsys):
    save_claims("02", [Claim("C99", "x", [Comparison(Arm("a", [1, 2, 3]), Arm("b", [1, 2, 3]), "greater")])],
                profile="cpu", path=tmp_path / "02.json")
    with pytest.raises(ValueError, match="C99"):
        render_reproduction(CLAIMS, tmp_path, ROOT)


def test_main_writes_page_and_forest_plots_and_checks(tmp_path, capsys):
    out, results = tmp_path / "book" / "reproduction.md", tmp_path / "results"
    args = ["--results", str(results), "--out", str(out), "--shared", str(tmp_path / "no.md")]
    assert reproduction.main([*args, "--check"]) == 1
    assert reproduction.main(args) == 0 and "**C35**" in out.read_text()
    assert reproduction.main([*args, "--check"]) == 0
    _save_02(results)
    assert reproduction.main([*args, "--check"]) == 1  # new results: the page is out of date
    assert reproduction.main(args) == 0 and (tmp_path / "book" / "figures" / "forest_02.png").is_file()
    assert reproduction.main([*args, "--check"]) == 0
    (tmp_path / "book" / "figures" / "forest_02.png").unlink()
    assert reproduction.main([*args, "--check"]) == 1  # a missing figure is caught
