"""``python -m loadtests <command>``: demo (the main job), bench, run (load tests), report,
compare (two runs), seed, web (a local stack for the web client)."""

from __future__ import annotations

import sys


def main() -> int:
    commands = {
        "demo": "loadtests.demo",
        "bench": "loadtests.bench.__main__",
        "run": "loadtests.load.runner",
        "report": "loadtests.report.render",
        "compare": "loadtests.report.compare",
        "seed": "loadtests.load.seed",
        "web": "loadtests.web",
    }
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m loadtests {{{','.join(commands)}}} [args]", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(commands[sys.argv[1]])
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
