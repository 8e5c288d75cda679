"""The claims a chapter puts to the test, what it measured, and the JSON file the reproduction page reads
(``course_utils.reproduction`` renders that page).

A chapter ends its experiments with::

    from course_utils.claims import Claim, judge, save_claims
    claims = [
        Claim("C04", "max-pool beats stride-2 down-sampling",
              measured=f"stride - maxpool = {d:+.2f} ± {noise:.2f} test acc (3 seeds)",
              verdict=judge(d, noise, expected="negative")),
    ]
    save_claims("02", claims)

``save_claims`` prints one line per claim (so every number in the JSON is also in the notebook's
outputs, which a test checks) and writes ``<results dir>/<chapter>.json`` atomically. The results dir is
``$COURSE_RESULTS_DIR`` if set; else ``book/results`` of the course checkout when the profile is ``cpu`` or
``gpu``; smoke runs write under ``$COURSE_RUNS_DIR`` so a test run never overwrites the book's results.
``book/reproduction.md`` is generated from those files and the claim list ``book/claims.json`` by
``python -m course_utils.reproduction`` (``make book`` and ``make execute`` run it; ``--check`` only compares).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_utils.io import atomic_write_text
from course_utils.runtime import get_profile

VERDICTS = ("confirmed", "not reproduced", "inside the noise")


@dataclass(frozen=True)
class Claim:
    """One claim of ``shared/CLAIMS.md`` (``id`` like ``"C04"``) as the chapter tested it.

    ``measured`` is the human-readable measurement (mean ± std, seeds); ``verdict`` one of ``VERDICTS``;
    ``note`` an optional sentence on why the result may differ from the seed's.
    """

    id: str
    claim: str
    measured: str
    verdict: str
    note: str = ""
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if not (len(self.id) == 3 and self.id[0] == "C" and self.id[1:].isdigit()):
            raise ValueError(f"Claim id must look like 'C04' (see shared/CLAIMS.md), got {self.id!r}.")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")
        if not self.measured.strip():
            raise ValueError(f"Claim {self.id}: 'measured' is empty; say what was measured (mean ± std, seeds).")


def judge(effect: float, noise: float, expected: str = "positive") -> str:
    """Verdict for a measured ``effect`` (e.g. a difference of means) against its ``noise``.

    ``|effect| <= noise`` is "inside the noise"; otherwise "confirmed" when the sign is the ``expected``
    one ("positive" or "negative"), else "not reproduced". ``expected="none"`` means the claim is that
    there is *no* effect: then inside the noise confirms it and anything beyond refutes it. A NaN
    ``noise`` (one seed, so no spread) always gives "inside the noise".
    """
    if expected not in ("positive", "negative", "none"):
        raise ValueError(f"expected must be 'positive', 'negative' or 'none', got {expected!r}.")
    if not math.isfinite(effect) or noise < 0 or math.isinf(noise):
        raise ValueError(f"effect must be finite and noise finite and >= 0 (NaN for one seed), got {effect}, {noise}.")
    if math.isnan(noise):  # one seed: no spread, so no effect can be told apart from noise
        return "inside the noise"
    inside = abs(effect) <= noise
    if expected == "none":
        return "confirmed" if inside else "not reproduced"
    if inside:
        return "inside the noise"
    return "confirmed" if (effect > 0) == (expected == "positive") else "not reproduced"


def course_root(start: Path) -> Path | None:
    """The course checkout holding ``start`` (the first folder up with ``_config.yml`` and ``book/``), or None."""
    for folder in [start, *start.parents]:
        if (folder / "_config.yml").is_file() and (folder / "book").is_dir():
            return folder
    return None


def results_dir(profile: str | None = None) -> Path:
    """Where ``save_claims`` writes (see the module docstring)."""
    if os.environ.get("COURSE_RESULTS_DIR"):
        return Path(os.environ["COURSE_RESULTS_DIR"])
    if get_profile(profile) == "smoke":
        return Path(os.environ.get("COURSE_RUNS_DIR", "runs")) / "results"
    root = course_root(Path.cwd().resolve())
    return root / "book" / "results" if root is not None else Path("results")


def save_claims(chapter: str, claims: list[Claim], profile: str | None = None, path: Path | None = None) -> Path:
    """Print each claim with its verdict and write them to ``<results dir>/<chapter>.json`` atomically."""
    if not claims:
        raise ValueError("save_claims needs at least one Claim.")
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Each claim may appear once per chapter; got {ids}.")
    profile = get_profile(profile)
    for c in claims:
        print(f"{c.id} [{c.verdict}] {c.claim}: {c.measured}")
    target = Path(path) if path is not None else results_dir(profile) / f"{chapter}.json"
    payload = {
        "chapter": chapter,
        "profile": profile,
        "date": _dt.date.today().isoformat(),
        "claims": [asdict(c) for c in claims],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return target


def load_claims(folder: Path) -> list[dict]:
    """All claims of every ``<chapter>.json`` in ``folder``, each with its chapter and profile, sorted by id."""
    rows = []
    for file in sorted(Path(folder).glob("*.json")):
        data = json.loads(file.read_text())
        for c in data["claims"]:
            rows.append({**c, "chapter": data["chapter"], "profile": data["profile"], "date": data["date"]})
    return sorted(rows, key=lambda r: r["id"])


__all__ = ["VERDICTS", "Claim", "course_root", "judge", "load_claims", "results_dir", "save_claims"]
