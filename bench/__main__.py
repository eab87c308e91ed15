"""`python -m bench [NAME] [options]`: run benchmark NAME (the registry workload by default).

A benchmark is a module `bench/NAME.py` with `main(argv: list[str]) -> int`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from types import ModuleType

import bench

DEFAULT = "registry"
USAGE = """usage: python -m bench [NAME] [options]

Runs benchmark NAME against Nimbus and CNCF Distribution; NAME defaults to {default}.
`python -m bench NAME --help` lists its options.

benchmarks: {names}
"""


def _entry(module: ModuleType) -> Callable[[list[str]], int] | None:
    main = getattr(module, "main", None)
    return main if callable(main) else None


def benchmarks() -> list[str]:
    """Modules of this package that have a main(argv)."""
    names = []
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"bench.{info.name}")
        except ImportError:
            continue
        if _entry(module) is not None:
            names.append(info.name)
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE.format(default=DEFAULT, names=", ".join(benchmarks())), end="")
        return 0
    name = args.pop(0) if args and not args[0].startswith("-") else DEFAULT
    if not name.isidentifier():
        print(f"no benchmark named {name!r}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.{name}":
            raise
        module = None
    entry = _entry(module) if module is not None else None
    if entry is None:
        print(
            f"no benchmark named {name!r}; choose from {', '.join(benchmarks())}", file=sys.stderr
        )
        return 2
    return entry(args)


if __name__ == "__main__":
    sys.exit(main())
