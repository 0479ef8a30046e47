"""`engine serve`: the argument parser and the foreground run (signals, banner)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path


def add_parser(sub) -> None:
    ps = sub.add_parser("serve", help="serve a model repository over HTTP (KServe v2, TF Serving, OpenAI for "
                        "language models) and a socket")
    ps.add_argument("--repository", default="models",
                    help="model repository folder (default ./models; an empty or missing one gets the demo model)")
    ps.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ps.add_argument("--http-port", type=int, default=8000, help="HTTP port (0: any free port; -1: no HTTP)")
    ps.add_argument("--socket-port", type=int, default=8001, help="socket protocol port (0: any; -1: none)")
    ps.add_argument("--unix-socket", help="also serve the socket protocol on this Unix socket path")
    ps.add_argument("--token-file", help="require this bearer token (first line of the file; or ENGINE_SERVE_TOKEN)")
    ps.add_argument("--control", choices=("poll", "explicit", "none"), default="poll",
                    help="poll: watch the repository; explicit: load at start, then only the repository API; "
                         "none: load nothing until asked")
    ps.add_argument("--poll-interval", type=float, default=2.0, help="seconds between repository scans")
    ps.add_argument("--max-request-mb", type=float, default=64, help="largest request body / frame")
    ps.add_argument("--max-connections", type=int, default=1024, help="open connections per front end")
    ps.add_argument("--read-timeout", type=float, default=30.0, help="seconds for a request to arrive whole")
    ps.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish in-flight requests on stop")
    ps.add_argument("--no-demo", action="store_true", help="do not write the demo model into an empty repository")
    ps.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    ps.set_defaults(fn=run)


def run(args) -> int:
    from ..errors import EngineError
    from .limits import Limits
    from .server import Server

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    repo = Path(args.repository)
    if not args.no_demo:
        from .demo import repository_is_empty, write_demo, write_language_demo
        if repository_is_empty(repo):
            print(f"{repo} is empty: writing the demo models first")
            write_demo(repo)
            write_language_demo(repo)
    if not repo.is_dir():
        raise EngineError(f"serve: model repository {repo} is not a folder")
    limits = Limits(max_request_bytes=int(args.max_request_mb * (1 << 20)), max_connections=args.max_connections,
                    read_timeout_s=args.read_timeout)
    server = Server(repo, host=args.host, http_port=None if args.http_port < 0 else args.http_port,
                    socket_port=None if args.socket_port < 0 else args.socket_port, unix_socket=args.unix_socket,
                    token_file=args.token_file, limits=limits, control=args.control,
                    poll_interval=args.poll_interval, drain_timeout=args.drain_timeout)
    stopping = threading.Event()

    def on_signal(signum, frame):  # SIGTERM / SIGINT: stop accepting, drain, exit
        if not stopping.is_set():
            stopping.set()
            print(f"\n{signal.Signals(signum).name}: draining in-flight requests, then exiting", flush=True)
            threading.Thread(target=server.stop, name="engine-serve-stop").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    _banner(server, repo)
    while not server.wait(0.5):
        pass
    print("stopped", flush=True)
    return 0


def _banner(server, repo: Path) -> None:
    m = server.manager
    print(f"\nengine serve: repository {repo.resolve()}")
    for row in m.index():
        print(f"  model {row['name']} version {row['version']}: {row['state']}"
              + (f" ({row['reason']})" if row["reason"] else ""))
    auth = "" if server.token is None else ' -H "Authorization: Bearer $(cat TOKEN_FILE)"'
    if server.http_address:
        base = f"http://{server.http_address}"
        print(f"\n  dashboard:         {base}/")
        print(f"  KServe v2 HTTP:    {base}/v2   (models: {base}/v2/repository/index, POST)")
        print(f"  TF Serving REST:   {base}/v1/models/<model>:predict")
        print(f"  OpenAI API:        {base}/v1   (language models: /v1/chat/completions, /v1/completions)")
        print(f"  Prometheus:        {base}/metrics")
        req = repo / "digits" / "request.json"
        if req.exists():
            print(f"\n  try it:  curl -s{auth} {base}/v2/models/digits/infer -d @{req}")
        if (repo / "smollm2").is_dir():
            chat = '{"model":"smollm2","max_tokens":64,"temperature":0,"messages":[{"role":"user","content":"What is the capital of France?"}]}'
            print(f"           curl -s{auth} {base}/v1/chat/completions -d '{chat}'")
    if server.socket_address:
        print(f"  socket protocol:   {server.socket_address}   "
              f"(python: engine.serve.Client(\"{server.socket_address}\").predict(model, x))")
    if server.unix_socket:
        print(f"  unix socket:       {server.unix_socket}")
    print("\nCtrl-C or SIGTERM stops (in-flight requests finish first).", flush=True)
    sys.stdout.flush()
