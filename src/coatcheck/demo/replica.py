"""One replica process: `python -m coatcheck.demo.replica --strategy S --name r1 --port P`.

Started by the demo's `Cluster`, never by hand. It serves the demo app with uvicorn on
127.0.0.1 and exits by itself if its parent goes away, so a demo killed with SIGKILL
leaves no replicas behind. The shared store's URL comes in `COATCHECK_DEMO_STORE` and the
client-side key in `COATCHECK_KEYS`: secrets stay off the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .app import build_app
from .cluster import STORE_ENV, watch_parent
from .strategies import STRATEGIES, Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coatcheck.demo.replica")
    parser.add_argument("--strategy", required=True, choices=sorted(STRATEGIES))
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--encrypted", action="store_true")
    parser.add_argument("--parent", type=int, default=os.getppid())
    args = parser.parse_args(argv)
    watch_parent(args.parent, lambda: os._exit(0))
    try:
        import uvicorn
    except ImportError:
        sys.exit("the demo needs uvicorn: pip install 'coatcheck[demo]'")
    logging.basicConfig(format=f"[{args.name}] %(name)s %(message)s", level=logging.WARNING)
    strategy = STRATEGIES[args.strategy]
    store_url = os.environ.get(STORE_ENV) or None  # set by the Cluster, never on argv
    manager = strategy.manager(Settings(store_url=store_url, encrypted=args.encrypted))
    app = build_app(manager, replica=args.name, strategy=strategy.name)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        # The balancer on 127.0.0.1 sets X-Forwarded-For: devices show the browser's IP.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )


if __name__ == "__main__":
    main()
