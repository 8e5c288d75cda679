"""The reproduction page: generated from the chapters' result files, whose numbers are in the notebooks."""

import json
import re
from pathlib import Path

import pytest

from course_utils import reproduction
from course_utils.claims import Claim, save_claims
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
        line = f"{c['id']} [{c['verdict']}] {c['claim']}: {c['measured']}"
        assert c["measured"] in text and line in text, (
            f"{path.name} {c['id']}: '{c['measured']}' is not in the outputs of {notebooks[0].name}; "
            "re-execute the chapter (make execute) so the JSON and the notebook come from the same run")
    profile = re.search(r"profile=(\w+) \| device=", text)
    assert profile and profile.group(1) == data["profile"], f"{path.name} says profile {data['profile']}"


def test_reproduction_page_is_up_to_date():
    page = ROOT / "book" / "reproduction.md"
    assert page.is_file(), "run `python -m course_utils.reproduction`"
    assert page.read_text() == render_reproduction(CLAIMS, RESULTS, ROOT), \
        "book/reproduction.md is out of date: run `python -m course_utils.reproduction` (make book does)"


def test_page_shows_measurements_and_unmeasured_claims(tmp_path, capsys):
    save_claims("02", [Claim("C04", "max-pool vs stride", measured="stride - maxpool = -0.61 ± 0.20 (3 seeds)",
                             verdict="confirmed", note="smaller than reported | on Fashion-MNIST"),
                       Claim("C07", "gelu vs relu", measured="+0.05 ± 0.12", verdict="inside the noise")],
                profile="cpu", path=tmp_path / "02.json")
    capsys.readouterr()
    text = render_reproduction(CLAIMS, tmp_path, ROOT)
    row = next(ln for ln in text.splitlines() if ln.startswith("| C04 |"))
    assert "stride - maxpool = -0.61 ± 0.20 (3 seeds)" in row and "**confirmed**" in row and "| cpu, " in row
    assert "smaller than reported \\| on Fashion-MNIST" in row  # a '|' in the text does not break the table
    assert "not yet measured (not measured by chapter 2)" in next(ln for ln in text.splitlines() if ln.startswith("| C05 |"))
    assert "not yet measured (chapter 6 not executed)" in next(ln for ln in text.splitlines() if ln.startswith("| C23 |"))
    assert "| confirmed | 1 |" in text and "| inside the noise | 1 |" in text and "| not yet measured | 33 |" in text
    assert text == render_reproduction(CLAIMS, tmp_path, ROOT), "the page must be the same on every run"


def test_unknown_claim_id_is_an_error(tmp_path, capsys):
    save_claims("02", [Claim("C99", "x", measured="1 ± 0", verdict="confirmed")], profile="cpu",
                path=tmp_path / "02.json")
    with pytest.raises(ValueError, match="C99"):
        render_reproduction(CLAIMS, tmp_path, ROOT)


def test_main_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "reproduction.md"
    args = ["--results", str(tmp_path / "none"), "--out", str(out), "--shared", str(tmp_path / "no.md")]
    assert reproduction.main([*args, "--check"]) == 1
    assert reproduction.main(args) == 0 and "| C35 |" in out.read_text()
    assert reproduction.main([*args, "--check"]) == 0
