"""Compare trust strategies from one shared warm-up on the embedded demo corpus.

python examples/compare_strategies.py local fedavg oracle weights predictions validation
"""

from __future__ import annotations

import sys

from secure_pcft.config import StrategyConfig
from secure_pcft.run import compare_strategies, demo_config


def main() -> None:
    names = sys.argv[1:] or ["local", "fedavg", "oracle", "predictions"]
    results = compare_strategies(
        demo_config("runs/compare"), [StrategyConfig(name=n) for n in names]
    )
    for r in results:
        s = r.summary()
        print(
            f"{s['strategy']:<12} mean test ppl {s['mean_test_ppl']:8.2f}  bytes {s['total_bytes_sent']:>12,}"
        )


if __name__ == "__main__":
    main()
