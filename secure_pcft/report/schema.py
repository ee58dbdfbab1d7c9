"""JSON Schema (draft 2020-12) of ``report.json``, format ``secure-pcft-report/1``.

The schema is data, kept here so that it ships with the package; ``docs/report.schema.json`` is
the same object written out for tools (a test keeps the two identical). Numbers that may be
non-finite (ε of a run without noise, a perplexity that overflowed) are a JSON number or one of
the strings ``"inf"``, ``"-inf"``, ``"nan"``, as everywhere in the toolkit's JSON.

Regenerate the file with ``python -c "from secure_pcft.report.schema import schema_json;
print(schema_json(), end='')" > docs/report.schema.json``.
"""

from __future__ import annotations

import json
from typing import Any

_REAL = {"$ref": "#/$defs/real"}
_REAL_OR_NULL = {"anyOf": [_REAL, {"type": "null"}]}
_STR_OR_NULL = {"type": ["string", "null"]}
_COUNT = {"type": "integer", "minimum": 0}
_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


_CHECK = _obj({
    "id": {"type": "string", "minLength": 1},
    "title": {"type": "string"},
    "status": {"enum": ["pass", "warn", "fail"]},
    "detail": {"type": "string"},
    "peer": _STR_OR_NULL,
    "counts": {"type": "boolean"},
})  # fmt: skip

_MECHANISM = _obj({
    "mechanism": {"enum": ["dp-sgd", "gaussian-validation"]},
    "noise_multiplier": {"type": "number", "minimum": 0},
    "sample_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "events": _COUNT,
    "steps": _COUNT,
    "released": {"type": "object", "additionalProperties": _COUNT},
})  # fmt: skip

_PRIVACY = _obj({
    "enabled": {"type": "boolean"},
    "ledger": _obj({
        "path": _STR_OR_NULL,
        "status": {"enum": ["verified", "fail", "missing", "not-applicable"]},
        "error": _STR_OR_NULL,
        "events": _COUNT,
        "head_hash": {"anyOf": [_SHA256, {"type": "null"}]},
    }),
    "epsilon_spent": _REAL_OR_NULL,
    "budget_epsilon": {"type": ["number", "null"]},
    "delta": {"type": ["number", "null"]},
    # built-in rdp / prv / gdp, or a name given to register_accountant (a plugin's)
    "accountant": {"anyOf": [{"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"},
                             {"type": "null"}]},
    # what (ε, δ) protects, from the verified ledger genesis ([privacy] unit); null without one
    "unit": {"enum": ["block", "document", "subject", None]},
    "epsilon_by_round": {"type": "array", "items": _obj({"round": _COUNT, "epsilon": _REAL})},
    "mechanisms": {"type": "array", "items": _MECHANISM},
    "releases": {"type": "array", "items": _obj({
        "released": {"type": "string"}, "recipient": {"type": "string"}, "count": _COUNT})},
    "stopped_sharing_round": {"type": ["integer", "null"]},
    "mu": _REAL_OR_NULL,
    "mu_exact": {"type": ["boolean", "null"]},
    "tpr_bounds": {"anyOf": [{"type": "null"}, {"type": "object", "additionalProperties": {
        "type": "number", "minimum": 0, "maximum": 1}}]},
}, {
    # DP runs: what earlier runs on the same data spent (results.json, from the site's budget store)
    "epsilon_prior": _REAL_OR_NULL,
})  # fmt: skip

_COUNTS_BY_PEER = {"type": "object", "additionalProperties": _COUNT}

_PEER = _obj({
    "peer_id": {"type": "string", "minLength": 1},
    "fingerprint": _STR_OR_NULL,
    "privacy": _PRIVACY,
    "traffic": _obj({
        "bytes_sent": _COUNT,
        "messages_sent": _COUNT,
        "by_round": {"type": "array", "items": _obj({
            "round": {"type": "integer"}, "bytes": _COUNT, "messages": _COUNT})},
        "adapters_sent_to": _COUNTS_BY_PEER,
        "adapters_received_from": _COUNTS_BY_PEER,
        "adapter_requests_declined": _COUNTS_BY_PEER,
        "messages_rejected": _COUNT,
    }),
    "final": {"anyOf": [{"type": "null"}, _obj({"test_ppl": _REAL, "test_acc": _REAL})]},
    "kept": {"anyOf": [{"type": "null"}, _obj({
        "origin": {"type": "string"}, "test_ppl": _REAL, "start_origin": {"type": "string"},
        "start_test_ppl": _REAL, "base_test_ppl": _REAL})]},
    "adapter": {"anyOf": [{"type": "null"}, _obj({
        "file": {"type": "string"}, "bytes": _COUNT, "sha256": _SHA256})]},
}, {
    # DP runs: how many of its signed ledger heads its partners hold, and whether they match
    "receipts": _obj({"held_by_partners": _COUNT, "status": {"enum": ["pass", "warn", "fail", None]}}),
})  # fmt: skip

_ATTACK = _obj({
    "label": {"type": "string"},
    "name": {"type": "string"},
    "threat_models": {"type": "array", "items": {"type": "string", "pattern": "^TM-[0-9]{2}$"}},
    "metrics": {"type": "object", "additionalProperties": _REAL},
    "thresholds": {"type": "array", "items": _obj({
        "metric": {"type": "string"},
        "bound": {"enum": ["max", "min"]},
        "limit": _REAL,
        "value": _REAL,
        "passed": {"type": "boolean"},
    })},
    "passed": {"type": "boolean"},
    "recorded_passed": {"type": ["boolean", "null"]},
    "roc": {"type": "array", "maxItems": 200, "items": {
        "type": "array", "minItems": 2, "maxItems": 2,
        "items": {"type": "number", "minimum": 0, "maximum": 1}}},
})  # fmt: skip

_AUDIT = _obj({
    "campaign": {"type": "string"},
    "description": {"type": "string"},
    "file": {"type": "string"},
    "sha256": _SHA256,
    "campaign_source": {"type": "string"},
    "campaign_thresholds_match": {"type": ["boolean", "null"]},
    "threat_models": {"type": "array", "items": {"type": "string"}},
    "trials": {"type": ["integer", "null"]},
    "base_model": {"type": "string"},
    "target_epsilon": _REAL_OR_NULL,
    "target_delta": _REAL_OR_NULL,
    "target_peer": {"type": "string"},
    "unit": {"enum": ["block", "document", "subject"]},
    "attacks": {"type": "array", "minItems": 1, "items": _ATTACK},
    "recorded_passed": {"type": ["boolean", "null"]},
    "versions": {"type": "object", "additionalProperties": {"type": "string"}},
})  # fmt: skip

_RUN = _obj({
    "run_dir": {"type": "string"},
    "results_sha256": _SHA256,
    "strategy": {"type": "string"},
    "peer_ids": {"type": "array", "minItems": 1, "items": {"type": "string"}},
    "base_model": {"type": "string"},
    "data": {"type": "string"},
    "rounds": _COUNT,
    "complete": {"type": "boolean"},
    "seconds": {"type": ["number", "null"]},
    "config_hash": _obj({"recorded": {"type": "string"}, "recomputed": _SHA256,
                         "match": {"type": "boolean"}}),
    "dp_enabled": {"type": "boolean"},
    "security_mode": {"enum": ["off", "full"]},
    "config": {"type": "object"},
    "started_at": _STR_OR_NULL,
    "finished_at": _STR_OR_NULL,
    "versions": {"type": "object", "additionalProperties": {"type": "string"}},
})  # fmt: skip

_SCOPE = _obj({
    "privacy_unit": {"type": "string"},
    "delta": {"type": "string"},
    "relay_sees": {"type": "string"},
    "not_covered": {"type": "array", "items": {"type": "string"}},
    "threat_models": {"type": "array", "items": _obj({
        "id": {"type": "string", "pattern": "^TM-[0-9]{2}$"}, "title": {"type": "string"}})},
})  # fmt: skip

_SECURITY = _obj({
    "mode": {"enum": ["off", "full"]},
    "consent": {"enum": ["mutual", "reciprocal", "asker"]},
    "key_dir": _STR_OR_NULL,
    "roster": _STR_OR_NULL,
    "fingerprint_source": {"enum": ["roster", "results.json", None]},
    "he_context_bytes": {"type": ["integer", "null"]},
    "he_context_messages": {"type": ["integer", "null"]},
})  # fmt: skip

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:secure-pcft:report:1",
    "title": "secure-pcft compliance report",
    "description": "Written by `secure-pcft report RUN_DIR`: per-peer ε from verified ledgers, "
    "traffic, fingerprints, audit figures against thresholds, and the checks behind the verdict.",
    **_obj({
        "format": {"const": "secure-pcft-report/1"},
        "generated_at": {"type": "string", "format": "date-time"},
        "verdict": {"enum": ["pass", "fail"]},
        "policy": _obj({"name": {"type": "string"}, "sha256": _SHA256,
                        "rules": {"type": "object"}}),
        # the reason given with --new-budget when a DP run started a fresh budget, else null
        "budget_renewed": _STR_OR_NULL,
        "run": _RUN,
        "versions": {"type": "object", "required": ["python", "secure-pcft"],
                     "additionalProperties": {"type": "string"}},
        "security": _SECURITY,
        "peers": {"type": "array", "minItems": 1, "items": _PEER},
        "trust": _obj({
            "peer_ids": {"type": "array", "items": {"type": "string"}},
            "rounds": {"type": "array", "items": _obj({
                "round": {"type": "integer"},
                "matrix": {"type": "array", "items": {"type": "array", "items": _REAL}}})},
        }),
        "audits": {"type": "array", "items": _AUDIT},
        "checks": {"type": "array", "items": _CHECK},
        "scope": _SCOPE,
    }),
    "$defs": {
        "real": {"anyOf": [{"type": "number"}, {"enum": ["inf", "-inf", "nan"]}]},
    },
}  # fmt: skip


def schema_json() -> str:
    """The schema as the text of ``docs/report.schema.json``."""
    return json.dumps(REPORT_SCHEMA, indent=2, ensure_ascii=False) + "\n"
