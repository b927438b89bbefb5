"""`onair-operator`: configuration from ONAIR_* variables, logging, then kopf with the handlers of
handlers.py."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys

import uvloop
from pydantic import ValidationError

from onair.gcpolicy import release_free_memory_periodically
from onair.heapprofile import install_from_env as install_heap_profile
from onair.jsonlog import setup_logging
from onair.operator.config import ENV_PREFIX, OperatorConfig


def main() -> None:
    parser = argparse.ArgumentParser(prog="onair-operator", description="The onair operator (kopf).")
    parser.add_argument("--namespace", action="append", default=[], help="Watch only these (default: all).")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    try:
        config = OperatorConfig.from_env()
    except ValidationError as error:
        parser.exit(2, "onair-operator: bad configuration:\n" + "\n".join(
            f"  {ENV_PREFIX}{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors()) + "\n")
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        # kopf logs every handled event at INFO; with thousands of jobs that is most of the CPU.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    release_free_memory_periodically()
    install_heap_profile()
    # kopf imports the official Kubernetes client whenever it is installed, to recognise its objects
    # and to borrow its login. The operator uses neither (kopf logs in with the kubeconfig or the
    # ServiceAccount itself), and loading that client costs about 30 MB.
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]
    import kopf

    from onair.operator import (
        handlers,  # registers the handlers with kopf
        kopf_fixes,
    )

    kopf_fixes.apply()
    if config.service_type != "ClusterIP":
        handlers.watch_ingest_services()

    # kopf names this replica in the peering objects after POD_ID (the chart sets the Pod's name); the
    # controller reads the same name to tell its own record from its peers'.
    os.environ.setdefault("POD_ID", f"{socket.gethostname()}-{os.getpid()}")
    namespaces = args.namespace or config.watch_namespaces
    # The controller, configured in kopf's start-up handler, lists where kopf watches.
    os.environ[f"{ENV_PREFIX}WATCH_NAMESPACES"] = json.dumps(namespaces)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=config.standalone,
        peering_name=config.peering_name,
        priority=config.peering_priority,
        liveness_endpoint=f"http://{config.listen_host}:{config.health_port}/healthz",
        memories=kopf_fixes.memories(),
        # What kopf's own CLI runs on when uvloop is installed (kopf.run leaves the choice to us).
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
