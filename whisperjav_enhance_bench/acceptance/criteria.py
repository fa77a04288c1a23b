"""The GPU criteria, declared once, and the records the acceptance sections fill in.

Every criterion appears in the final table whether or not its section ran: measured and passed,
measured and failed, or not judged (with why: a smoke run, a skipped section, CPU-only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..results import RAN

# id -> (what is checked, the bar). Order is the table's order.
CRITERIA = {
    "agree-mossformer2": ("MossFormer2: CUDA output matches CPU (TF32 off)",
                          "|cuda - cpu| <= 1e-4 + 1e-3 |cpu|"),
    "agree-zipenhancer": ("ZipEnhancer: CUDA output matches CPU (TF32 off)",
                          "|cuda - cpu| <= 1e-4 max|cpu| + 1e-3 |cpu|"),
    "model-mossformer2": ("MossFormer2: a forward's peak within the memory model",
                          "peak <= vram_bytes(batch, window)"),
    "model-zipenhancer": ("ZipEnhancer: a forward's peak within the memory model",
                          "peak <= vram_bytes(batch, window)"),
    "flat-mossformer2": ("MossFormer2: peak memory flat over 30, 60, 222 s scenes",
                         "spread <= 10%"),
    "flat-zipenhancer": ("ZipEnhancer: peak memory flat over 30, 60, 222 s scenes",
                         "spread <= 10%"),
    "batch-mossformer2": ("MossFormer2: 32 windows per forward vs 1", ">= 10x audio s/s"),
    "nooom-mossformer2": ("MossFormer2 film set, 8 GiB cap: every pool run without OOM",
                          "all scenes ok, 0 OOM"),
    "rate-mossformer2": ("MossFormer2 film set, batched pool", "> 1,000 audio s/s"),
    "recycle-cost": ("Recycle every 25 scenes with a warm standby", "< 0.5 s wait per recycle"),
    "nooom-zipenhancer": ("ZipEnhancer film set, 8 GiB cap, batched pool",
                          "all scenes ok, 0 OOM"),
}


@dataclass(frozen=True)
class Criterion:
    """One row of the pass/fail table."""

    id: str                   # key of CRITERIA
    value: str                # what was measured, for people ("-" when nothing was)
    passed: bool | None       # None: not judged (``note`` says why)
    note: str = ""

    def __post_init__(self):
        if self.id not in CRITERIA:
            raise ValueError(f"unknown criterion {self.id!r}")

    @property
    def title(self) -> str:
        return CRITERIA[self.id][0]

    @property
    def target(self) -> str:
        return CRITERIA[self.id][1]

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "not judged"}[self.passed]

    def as_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "target": self.target, "value": self.value,
                "passed": self.passed, "verdict": self.verdict, "note": self.note}


@dataclass
class Section:
    """What one section did: its data for the report and the criteria it measured."""

    name: str                          # plan.SECTIONS entry
    status: str = RAN                  # results.RAN, SKIPPED (reason says why) or ERROR
    reason: str | None = None
    seconds: float = 0.0               # wall time of the section
    data: dict = field(default_factory=dict)
    criteria: list = field(default_factory=list)   # Criterion

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "reason": self.reason,
                "seconds": round(self.seconds, 2), "data": self.data,
                "criteria": [c.as_dict() for c in self.criteria]}


def judged(passed: bool, smoke: bool, note: str = "") -> tuple[bool | None, str]:
    """(passed, note) as the table shows them: a smoke run judges nothing."""
    if smoke:
        return None, "smoke run (CPU, tiny sizes): not judged"
    return passed, note


def final_table(sections: list[Section]) -> list[Criterion]:
    """Every criterion once, in CRITERIA's order: as measured, or not judged with the reason its
    section gave (skipped, error) or 'not measured'."""
    found: dict[str, Criterion] = {}
    for s in sections:
        for c in s.criteria:
            found.setdefault(c.id, c)
    why = {}
    for s in sections:
        if s.status != RAN:
            for cid in SECTION_CRITERIA.get(s.name, ()):
                why.setdefault(cid, f"{s.name} {s.status}: {s.reason}")
    return [found.get(cid) or Criterion(cid, "-", None, why.get(cid, "not measured"))
            for cid in CRITERIA]


# Which section measures which criteria (for the reason a criterion was not judged).
SECTION_CRITERIA = {
    "agreement-mossformer2": ("agree-mossformer2", "model-mossformer2"),
    "agreement-zipenhancer": ("agree-zipenhancer", "model-zipenhancer"),
    "scaling-mossformer2": ("flat-mossformer2", "batch-mossformer2"),
    "scaling-zipenhancer": ("flat-zipenhancer",),
    "film-write": ("nooom-mossformer2", "rate-mossformer2", "recycle-cost", "nooom-zipenhancer"),
    "film-pool-batched": ("nooom-mossformer2", "rate-mossformer2"),
    "film-recycle": ("recycle-cost",),
    "film-zipenhancer": ("nooom-zipenhancer",),
}
