"""`engine bench`: the argument parser and the run (see docs/bench.md).

    engine bench model.onnx --batch 1,8,64 --threads 2 --peers onnxruntime,openvino --json out.json
    engine bench model.h5 --peers keras
    engine bench http://127.0.0.1:8000 --model digits --concurrency 1,16,64 --seconds 10
"""

from __future__ import annotations

import sys


def _ints(text: str) -> list:
    from ..errors import EngineError
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        vals = []
    if not vals or any(v < 1 for v in vals):
        raise EngineError(f"bench: {text!r}: expected comma-separated whole numbers >= 1, e.g. 1,8,64")
    return vals


def add_parser(sub) -> None:
    pb = sub.add_parser("bench", help="time a model against reference frameworks, or load a live v2 server")
    pb.add_argument("target", help="model file (.engine, .onnx, .h5, .keras) or http://HOST:PORT of a v2 server")
    pb.add_argument("--peers", default="auto",
                    help="comma-separated: onnxruntime, openvino, keras, torch; 'auto' (default): every one that "
                         "applies to the file; 'none': engine alone")
    pb.add_argument("--peer-model", help="run the peers on this file instead (e.g. the original of a converted model)")
    pb.add_argument("--batch", default="1", help="batch sizes, e.g. 1,8,64 (server mode: one)")
    pb.add_argument("--threads", type=int, default=1, help="threads every framework gets (default 1)")
    pb.add_argument("--warmup", type=int, default=3, help="untimed runs per framework and batch (default 3)")
    pb.add_argument("--runs", type=int, default=None, help="timed runs per framework and batch (default 30)")
    pb.add_argument("--seconds", type=float, default=None,
                    help="model mode: timed seconds per framework and batch instead of --runs; "
                         "server mode: seconds per concurrency (default 10)")
    pb.add_argument("--shape", action="append", default=[], metavar="NAME=D0xD1..",
                    help="shape of an input with symbolic dimensions, e.g. x=1x128 (repeatable)")
    pb.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    pb.add_argument("--input", help=".npz with an array per input name (instead of generated inputs)")
    pb.add_argument("--json", help="write the result here (schema in docs/bench.md)")
    pb.add_argument("--plot", help="write a PNG of latency distributions (needs matplotlib)")
    pb.add_argument("--model", help="server mode: the model name")
    pb.add_argument("--concurrency", default="1,16", help="server mode: virtual clients, e.g. 1,16,64")
    pb.add_argument("--binary", action="store_true", help="server mode: binary tensor extension instead of JSON")
    pb.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    pb.set_defaults(fn=run)


def _progress(args):
    """A Keras-style bar on stderr when it is a terminal; nothing otherwise."""
    if args.quiet or not sys.stderr.isatty():
        return None
    from ..progbar import Progbar
    bars = {}

    def update(done: int, total: int) -> None:
        bar = bars.setdefault(total, Progbar(total, file=sys.stderr, unit_name="round"))
        bar.update(done)
    return update


def run(args) -> int:
    from ..errors import EngineError
    from . import report
    from .inputs import parse_shapes
    from .peers import PEERS

    shapes = parse_shapes(args.shape)
    if args.threads < 1:
        raise EngineError("bench: --threads must be >= 1")
    if args.target.startswith(("http://", "https://")):
        from .remote import bench_server
        batch = _ints(args.batch)
        if len(batch) != 1:
            raise EngineError("bench: server mode takes one --batch")
        result = bench_server(args.target, model=args.model, concurrency=_ints(args.concurrency),
                              seconds=10.0 if args.seconds is None else args.seconds, batch=batch[0],
                              shapes=shapes, seed=args.seed, binary=args.binary, progress=_progress(args))
    else:
        from .runner import bench_model
        if args.peers == "auto":
            peers = [n for n, p in PEERS.items() if not p.unavailable(args.peer_model or args.target)
                     or "missing" in p.unavailable(args.peer_model or args.target)]
        elif args.peers == "none":
            peers = []
        else:
            peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        runs = args.runs if args.runs is not None else (None if args.seconds is not None else 30)
        if runs is not None and runs < 1:
            raise EngineError("bench: --runs must be >= 1")
        result = bench_model(args.target, peers=peers, batches=_ints(args.batch), threads=args.threads,
                             warmup=max(0, args.warmup), runs=runs, seconds=args.seconds, shapes=shapes,
                             seed=args.seed, input_file=args.input, peer_model=args.peer_model,
                             progress=_progress(args))
    report.sanitize(result)
    if not args.quiet:
        print(report.table(result))
    if args.json:
        report.write_json(result, args.json)
    if args.plot:
        report.write_plot(result, args.plot)
    return 0
