"""Command line for the local platform.

  python -m localplatform up      start (or reuse) the platform; prints `export` lines for a shell
  python -m localplatform down    stop every process it started
  python -m localplatform status  print where it runs, or exit 1 when it does not
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from localplatform.platform import LocalPlatform

DEFAULT_STATE = Path(__file__).resolve().parents[2] / ".local" / "platform"


def main() -> int:
    parser = argparse.ArgumentParser(prog="localplatform", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("ONAIR_STATE_DIR", DEFAULT_STATE)))
    parser.add_argument("--kwok-nodes", type=int, default=2)
    args = parser.parse_args()
    platform = LocalPlatform(args.state_dir, kwok_nodes=args.kwok_nodes)
    if args.command == "up":
        info = platform.up()
        for key, value in info.env().items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.command == "down":
        platform.down()
        return 0
    running = platform.info()
    if running is None:
        print("not running", file=sys.stderr)
        return 1
    print(json.dumps(asdict(running), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
