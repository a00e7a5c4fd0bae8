"""How long a long call takes to stop after SIGINT, at several points of the call.

Runs tests/test_api.py's LONG_CALL script (the one its Ctrl-C test runs) for one case in a fresh
process per delay, sends SIGINT ``delay`` seconds after the script prints "start", and prints the
time until it reports "interrupted". Any build: set PYTHONPATH to the upweight to measure.

    python bench/ctrl_c_latency.py [direct-factor|fit|score|net-hessian|net-cg|net-pbrf]
"""

import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SOURCE = (Path(__file__).resolve().parent.parent / "tests" / "test_api.py").read_text()
LONG_CALL = re.search(r'LONG_CALL = """(.*?)"""', SOURCE, re.S).group(1)


def main() -> None:
    case = sys.argv[1] if len(sys.argv) > 1 else "direct-factor"
    for delay in [0.3, 0.8, 1.3, 1.8, 2.3, 2.8, 3.3, 3.8, 4.3, 4.8]:
        proc = subprocess.Popen([sys.executable, "-c", LONG_CALL, case], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "start"
            time.sleep(delay)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline().strip()
            print(f"{case}: SIGINT {delay:.1f} s after start: {line or '(nothing)'} after {time.monotonic() - sent:.3f} s", flush=True)
        finally:
            proc.kill()


if __name__ == "__main__":
    main()
