"""A Ray cluster on this machine for the tests and benchmarks: a head and more nodes, every one
listening on 127.0.0.1 only, with Ray's token authentication off whatever `~/.ray` holds.

    python tests/ray_cluster.py --nodes 2 --cpus 1 --temp-dir /tmp/rfsXXXX

prints the head's address (HOST:PORT) on stdout once every node has joined, and runs the cluster
until its stdin closes (or it gets SIGTERM); then it stops the nodes it started, by their processes,
never with `ray stop` (which stops every Ray instance on the machine).

Ray replaces a node address of 127.0.0.1 with the machine's own address, and then listens on every
interface, unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` is false; `ray start` then refuses to add a
second node, so the nodes are started with `ray.cluster_utils.Cluster` (Ray's documented mini-cluster
for tests), which does not check. Every process that connects to the cluster (a `fellowship build`
driver) needs `ENV` too: Ray reads these variables when it is imported.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the nodes' address: they listen on it only
    "RAY_AUTH_MODE": "disabled",  # a ~/.ray/auth_token a bare ray.init() left must not switch token auth on
    "RAY_USAGE_STATS_ENABLED": "0",
}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of each node")
    parser.add_argument("--temp-dir", required=True, help="Ray's logs and sockets (short: socket paths live under it)")
    parser.add_argument("--object-store-mb", type=int, default=128, help="each node's object store")
    args = parser.parse_args()
    os.environ.update(ENV)
    # Ray's Cluster writes the head's address to <RAY_TMPDIR or /tmp>/ray/ray_current_cluster, which
    # fails where that folder does not exist, and elsewhere points a bare `ray.init()` of any process
    # on the machine at this cluster: it goes into the cluster's own temp dir instead
    os.environ["RAY_TMPDIR"] = args.temp_dir
    os.makedirs(os.path.join(args.temp_dir, "ray"), exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from ray.cluster_utils import Cluster

    node = {"num_cpus": args.cpus, "node_ip_address": "127.0.0.1", "object_store_memory": args.object_store_mb << 20}
    cluster = Cluster()
    try:
        cluster.add_node(**node, temp_dir=args.temp_dir, include_dashboard=False)
        for _ in range(args.nodes - 1):
            cluster.add_node(**node)
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the parent closes our stdin, or is gone
    finally:
        cluster.shutdown()
        _end_descendants()


def _end_descendants() -> None:
    """The processes the nodes started that outlive them (Ray's agents rename themselves `ray::...`)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for p in children:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


if __name__ == "__main__":
    main()
