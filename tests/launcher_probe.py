"""A stand-in worker for tests/test_launcher.py: reports what a run's process sees, on its event fd.

Run as `python -m tests.launcher_probe --event-fd N` (or forked by the fork server) with a JSON request
on stdin: {"rng": bool, "env_key": str, "sleep": float, "exit": int}. It leaves a mark in a module
global, so the next run can show whether it inherited it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--event-fd", type=int, required=True)
    args = parser.parse_args()
    request = json.loads(sys.stdin.read())
    import greenlab.core.train.child_events as marked

    facts = {
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "name": __name__,
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "seen_mark": getattr(marked, "_probe_mark", None),
        "env": os.environ.get(request.get("env_key", "")),
    }
    marked._probe_mark = os.getpid()
    if request.get("rng"):
        import numpy
        import torch

        facts.update(
            numpy_draw=int(numpy.random.randint(1 << 30)),
            torch_seed=torch.initial_seed(),
            torch_state=hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
            cuda_initialized=torch.cuda.is_initialized(),
        )
    with os.fdopen(args.event_fd, "w") as events:
        events.write(json.dumps(facts) + "\n")
        events.flush()
        print("probe says hello")
        sys.stdout.flush()
        time.sleep(request.get("sleep", 0))
    return int(request.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
