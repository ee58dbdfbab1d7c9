"""Write the sample site files that ``examples/configs/own_files.toml`` trains on.

Three small plants' private text, invented for this example (no real plant, person or record):
maintenance reports of two pumping stations (``plant-a``, ``plant-b``: one domain) and shift notes
of a packaging line (``plant-c``), one document per line, plus public reference text nobody owns.
Deterministic (seeded); the files in this folder are its output::

    python examples/sites/make_sites.py
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

PUMPS = ["pump P-101", "pump P-102", "booster pump B-7", "dosing pump D-3", "intake pump P-4"]
PUMP_FINDINGS = [
    "the mechanical seal was weeping at the drive end",
    "bearing temperature rose to {t} degrees during the morning run",
    "vibration on the motor housing read {v} mm/s, above the alarm limit",
    "the coupling guard was loose and one bolt was missing",
    "suction pressure dropped when the strainer was half blocked",
    "oil in the bearing housing was dark and smelled burnt",
    "impeller clearance was measured at {c} mm against a nominal 0.4 mm",
]
PUMP_ACTIONS = [
    "Seal replaced and the pump run for two hours without leakage.",
    "Bearing regreased; temperature back to normal after thirty minutes.",
    "Alignment checked with the laser tool and corrected by {c} mm.",
    "Strainer cleaned and a note left for the next inspection round.",
    "Oil changed and a sample sent to the lab.",
    "Work order raised for a new impeller; pump kept on standby.",
]
LINE_EVENTS = [
    "Film roll changed on wrapper 2 at {h}:00, splice held",
    "Labeller skipped {n} cartons after the speed change",
    "Case packer stopped twice on a jammed flap",
    "Glue temperature on the sealer drifted to {t} degrees",
    "Metal detector rejected {n} packs, test pieces passed afterwards",
    "Conveyor belt tracking adjusted at the transfer point",
]
LINE_NOTES = [
    "Handed over to the night shift with the backlog cleared.",
    "Quality checked the seals on a sample of twenty packs, all good.",
    "Operator training on the new recipe continues tomorrow.",
    "Spare nozzles ordered, two left in the store.",
    "Line ran at reduced speed for the last hour.",
    "Cleaning done before the product change.",
]
PUBLIC = [
    "Regular inspection of rotating equipment reduces unplanned stops.",
    "A work permit is required before opening any pressurised line.",
    "Lubricants should be stored in a clean, dry and labelled cabinet.",
    "Vibration trends are more informative than a single reading.",
    "Handover notes should state open issues and who owns them.",
    "Personal protective equipment is checked at the start of each shift.",
    "Spare parts with long lead times are listed in the critical stock plan.",
    "A near miss is reported even when nobody was hurt.",
    "Cleaning schedules depend on the product and the line speed.",
    "Calibration records are kept for every measuring instrument.",
    "Alarm limits are reviewed after each change of operating point.",
    "Energy use is logged per line and compared week by week.",
]


def _fill(text: str, rng: random.Random) -> str:
    return text.format(
        t=rng.randint(62, 95),
        v=round(rng.uniform(4.5, 11.0), 1),
        c=round(rng.uniform(0.2, 1.4), 2),
        h=rng.randint(6, 22),
        n=rng.randint(2, 40),
    )


def pump_reports(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        pump = rng.choice(PUMPS)
        finding = _fill(rng.choice(PUMP_FINDINGS), rng)
        action = _fill(rng.choice(PUMP_ACTIONS), rng)
        out.append(f"Report {seed}-{i:03d}: during the round on {pump} {finding}. {action}")
    return out


def shift_notes(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        events = "; ".join(_fill(e, rng) for e in rng.sample(LINE_EVENTS, 2))
        out.append(f"Shift note {i:03d}: {events}. {rng.choice(LINE_NOTES)}")
    return out


def main() -> None:
    (HERE / "plant-a.txt").write_text("\n".join(pump_reports(1, 60)) + "\n")
    (HERE / "plant-b.txt").write_text("\n".join(pump_reports(2, 60)) + "\n")
    (HERE / "plant-c.txt").write_text("\n".join(shift_notes(3, 60)) + "\n")
    rng = random.Random(4)
    public = [f"{a} {b}" for a in PUBLIC for b in rng.sample(PUBLIC, 7) if a != b]
    (HERE / "public_reference.txt").write_text("\n".join(public) + "\n")


if __name__ == "__main__":
    main()
