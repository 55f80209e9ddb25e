"""``asp-service serve``: a local Ray + Serve running the learner behind Serve's gRPC proxy.

    asp-service serve                       # gRPC on :9000, metrics on :8080, checkpoints in ./checkpoints
    asp-service serve --strategy ewc --predictors 2 --device cuda
    asp-service serve --set lam=0.3 --set importance_stride=1   # the learner's hyperparameters

Ctrl-C (or SIGTERM) writes a final checkpoint, shuts Serve and Ray down and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading


def _hidden(text: str) -> list[int]:
    return [int(width) for width in text.split(",") if width]


def build_parser() -> argparse.ArgumentParser:
    from asp_service.learning import STRATEGIES

    parser = argparse.ArgumentParser(prog="asp-service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start Ray + Serve with the learner app")
    serve.add_argument("--port", type=int, default=9000, help="gRPC port of Serve's proxy")
    serve.add_argument("--metrics-port", type=int, default=8080, help="Ray's Prometheus metrics export port")
    serve.add_argument("--strategy", default="asp", choices=STRATEGIES)
    serve.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    serve.add_argument("--checkpoint-dir", default="checkpoints", help="'' turns checkpoints off")
    serve.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between periodic checkpoints")
    serve.add_argument("--checkpoint-every-samples", type=int, default=20000,
                       help="also checkpoint after this many trained samples (0: by time only)")
    serve.add_argument("--predictors", type=int, default=0, help="extra predictor replicas (scale-out)")
    serve.add_argument("--hidden", type=_hidden, default=[400, 400], help="hidden widths, e.g. 400,400")
    serve.add_argument("--anchor-every", type=int, default=5000, help="samples between periodic anchors")
    serve.add_argument("--set", dest="hparams", action="append", default=[], metavar="NAME=VALUE",
                       help="a hyperparameter of the learner or its strategy (repeatable), e.g. lam=0.3, "
                            "importance_stride=1; see OnlineLearner")
    serve.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    serve.add_argument("--writer-token-file", default=os.environ.get("ASP_WRITER_TOKEN_FILE"),
                       help="bearer tokens (one per line) for Train, TrainBatch, Checkpoint, Reanchor and reads "
                            "(default: $ASP_WRITER_TOKEN_FILE; $ASP_WRITER_TOKENS adds comma-separated tokens)")
    serve.add_argument("--reader-token-file", default=os.environ.get("ASP_READER_TOKEN_FILE"),
                       help="bearer tokens for Predict and GetStatus (default: $ASP_READER_TOKEN_FILE; "
                            "$ASP_READER_TOKENS adds more); needs writer tokens too")
    return parser


def config_from_args(args: argparse.Namespace):
    """The validated ServiceConfig; a learner is built once on the CPU so that a bad ``--set``
    fails here, before Ray starts, with the learner's own message."""
    from asp_service.params import parse_assignments
    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.service import build_learner

    try:
        hparams = parse_assignments(args.hparams)
        config = ServiceConfig(strategy=args.strategy, device=args.device, checkpoint_dir=args.checkpoint_dir or None,
                               checkpoint_every_s=args.checkpoint_every, predictors=args.predictors,
                               checkpoint_every_samples=args.checkpoint_every_samples or None,
                               hidden=args.hidden, anchor_every=args.anchor_every, hparams=hparams,
                               writer_token_file=args.writer_token_file or None,
                               reader_token_file=args.reader_token_file or None)
        build_learner(config, "cpu")
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"asp-service: invalid settings: {exc}") from None
    return config


def serve_forever(args: argparse.Namespace) -> int:
    from asp_service.serving.auth import TokenAuth
    from asp_service.serving.server import start_service

    config = config_from_args(args)
    auth = TokenAuth.from_sources(writer_token_file=config.writer_token_file,  # fail before Ray starts
                                  reader_token_file=config.reader_token_file)
    service = start_service(config, grpc_port=args.port, metrics_port=args.metrics_port, num_cpus=args.num_cpus)
    print(f"asp-service: gRPC on {service.target} (application '{service.app_name}', "
          f"{'bearer tokens required' if auth.enabled else 'no authentication'}), "
          f"metrics on http://127.0.0.1:{service.metrics_port}/metrics; Ctrl-C to stop", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    print("asp-service: stopping (final checkpoint)...", flush=True)
    service.stop(checkpoint=True)
    print("asp-service: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve_forever(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
