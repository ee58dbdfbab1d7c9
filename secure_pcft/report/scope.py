"""What a compliance report does not cover: the limits a reviewer must read next to the verdict.

A PASS says the recorded releases stayed within the stated (ε, δ), the channels were the configured
ones and the attached audits met their thresholds. It does not say more; this section says what
"more" would be, with the run's own numbers where they matter (the privacy unit's size, δ against
the number of records).
"""

from __future__ import annotations

from typing import Any

# The adversaries of threat_models/ (IDs and titles; tests check them against threat_models/README.md).
THREAT_MODELS = {
    "TM-01": "Curious peer: an honest-but-curious consortium member",
    "TM-02": "Malicious peer: a roster member that deviates from the protocol",
    "TM-03": "Network attacker: reads, injects, replays, drops traffic",
    "TM-04": "Untrusted relay / coordinator (Flower ServerApp, loopback transport)",
    "TM-05": "Colluding peers: several members pool what they received",
    "TM-06": "Compromised site host or stolen keys",
    "TM-07": "Privacy-budget overrun: a peer releases more than its ε budget",
}


_UNIT_TEXT = {
    "block": "one training block of {block} tokens of a peer's text. A document longer than one "
    "block is protected only as a group: k blocks of one document carry at most k·ε (group "
    "privacy), and a fact repeated across blocks is repeated evidence.",
    "document": "one document of a peer's text, whatever its length: its blocks (of {block} "
    "tokens, never shared with another document) contribute one clipped gradient per DP-SGD step "
    "and one averaged loss per validation score. A data subject with k documents is protected "
    "only as a group (k·ε).",
    "subject": "one data subject: all documents a peer holds of that subject (named by the "
    "data's subject field) contribute one clipped gradient per DP-SGD step and one averaged loss "
    "per validation score, whatever their number. A subject named differently in two records "
    "counts as two subjects.",
}


def scope_section(
    config: dict[str, Any], peers: list[dict[str, Any]], blocks: dict[str, int | None] | None = None
) -> dict[str, Any]:
    """The report's ``scope`` object: the privacy unit, δ (per peer, against its 1/n where the
    number ``blocks[peer]`` of its training blocks is known), what the relay sees, what is left
    out."""
    block = int(config.get("data", {}).get("block_size", 0))
    dp = bool(config.get("privacy", {}).get("enabled", False))
    secure = config.get("security", {}).get("mode") == "full"
    deltas = sorted({p["privacy"]["delta"] for p in peers if p.get("privacy", {}).get("delta")})
    units = sorted({str(p["privacy"]["unit"]) for p in peers if p.get("privacy", {}).get("unit")})
    named = units[0] if len(units) == 1 else str(config.get("privacy", {}).get("unit", "block"))
    unit = (
        _UNIT_TEXT[named].format(block=block)
        if dp
        else ("none: differential privacy is off, so no record is protected by an ε.")
    )
    if dp and len(units) > 1:
        unit += f" (the peers' ledgers name different units: {', '.join(units)})"
    per_peer = []
    for p in peers:
        d, n = p.get("privacy", {}).get("delta"), (blocks or {}).get(p["peer_id"])
        if d:
            per_peer.append(
                f"{p['peer_id']} {d:g}" + (f" (n = {n}, δ·n = {d * n:.2g})" if n else "")
            )
    delta = (
        f"δ per peer: {'; '.join(per_peer)}. δ is the probability with which the ε guarantee may "
        f"fail outright; it should be well below 1 / n, n = the peer's number of training {named}s "
        "(δ·n well below 1; the policy's max_delta_times_n is checked per peer)."
        if deltas
        else "no δ (no ledger was verified)."
    )
    relay = (
        "envelope headers only: sender, recipient, round, message type, sizes and timing. Who "
        "requested whose adapter reveals whom each peer's trust rule selected."
        if secure
        else 'everything: [security] mode = "off" sends adapters, signatures and scores in clear.'
    )
    return {
        "privacy_unit": unit,
        "delta": delta,
        "relay_sees": relay,
        "not_covered": [
            "the base model's own training data and whatever it already memorised",
            "the public reference set used for prediction signatures (public by definition)",
            "poisoning within the norm bounds that does not raise a peer's validation loss (a "
            "backdoor): acceptance adopts only what a peer's validation split supports, and under "
            "DP it is skipped when that split is too small for its noise",
            "side channels on a site's host (timing, cache, power) and a host compromised before "
            "the run (TM-06 covers stolen keys, not a subverted training process)",
            "attached audits measure the campaign's own targets trained with its recipe, not this "
            "run's released adapters",
            "this report's inputs other than ledgers, the roster and the signed ledger heads are "
            "not signed: results.json is hashed (its SHA-256 is recorded) but not authenticated, "
            "so a receipt can be withheld from it (not forged); a peer that never released an "
            "adapter signed no head, and its ledger is checked by its own chain only",
            "spend on the same data outside this site's budget store (another machine, a deleted "
            "store): the store counts what this site registered",
            "the model each peer keeps is chosen on its validation split without noise: it is DP "
            "for the training blocks, not the validation blocks, and stays with the site",
        ],
        "threat_models": [{"id": k, "title": v} for k, v in THREAT_MODELS.items()],
    }
