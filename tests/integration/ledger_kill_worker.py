"""Worker for the SIGKILL test of the privacy ledger (run by ``test_ledger_kill.py``).

``release_loop`` is what a peer does: record a release through the budget guard (append + fsync),
*then* release — here, append one line ``"<k> <entry hash>"`` to a marker file. The test kills the
process at random moments and checks that the ledger always covers every marker.

Modes:
    run LEDGER MARKER BUDGET    release until killed (or the budget is exhausted: exit 3).
    serve LEDGER MARKER BUDGET  import once, then fork one ``run`` child per "go" line on stdin,
                                print "pid <pid>", reap it and print "exit <status>"; "quit" ends.
                                Each child is a separate process that opens the ledger from disk
                                afresh: the fork only saves the interpreter's start-up time.
"""

from __future__ import annotations

import os
import sys
import traceback

from secure_pcft.errors import BudgetExhaustedError
from secure_pcft.privacy import BudgetGuard, DpEvent, PrivacyLedger

DELTA = 1e-5
EXHAUSTED = 3


def event_for(k: int) -> DpEvent:
    """The k-th release (k = events already in the ledger), a fixed function of k."""
    if k % 7 == 6:
        return DpEvent("gaussian-validation", 20.0, 1.0, 1 + k % 3, k, "validation-scores")
    return DpEvent("dp-sgd", 1.0, 0.01, 1 + k % 5, k, "adapter", ("peer-1",))


def release_loop(ledger_file: str, marker_file: str, budget: float) -> int:
    ledger = PrivacyLedger.open(
        ledger_file, peer_id="peer-0", delta=DELTA, budget_epsilon=budget, accountant="rdp"
    )
    guard = BudgetGuard(ledger, budget, DELTA, "rdp")
    with open(marker_file, "ab", buffering=0) as marker:
        while True:
            k = len(ledger.entries)
            try:
                guard.record_release([event_for(k)])
            except BudgetExhaustedError:
                return EXHAUSTED
            marker.write(f"{k} {ledger.entries[-1].hash}\n".encode())  # the "release"


def serve(ledger_file: str, marker_file: str, budget: float) -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            return
        pid = os.fork()
        if pid == 0:  # child: never returns into the server loop
            code = 2
            try:
                code = release_loop(ledger_file, marker_file, budget)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    mode, ledger_arg, marker_arg, budget_arg = sys.argv[1:5]
    if mode == "serve":
        serve(ledger_arg, marker_arg, float(budget_arg))
    else:
        print("ready", flush=True)
        sys.exit(release_loop(ledger_arg, marker_arg, float(budget_arg)))
