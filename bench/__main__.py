"""Run every benchmark in turn: `python -m bench [NAME ...]`."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("kdf", "sip2", "ldap", "radius", "eap", "stores", "import_", "upstream", "workers")
# Run only when named (minutes each): `python -m bench memory`, `soak`, `instructions`.
ON_REQUEST = ("memory", "soak", "instructions")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"\n## {name}: not written yet")
                continue
            raise
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
