"""``asp-client``: stream a scenario, predict with attention maps, read status, checkpoint.

    asp-client stream --scenario permuted-mnist            # embedded MNIST subset, 5 tasks
    asp-client predict digit.png --top-k 3 --attention out.png
    asp-client status
    asp-client checkpoint
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import deque
from pathlib import Path

import numpy as np
from google.protobuf.json_format import MessageToDict

from clients.learner_client import LearnerClient
from clients.scenario import load_scenario, scenario_batches


def scenario_names() -> list[str]:
    from asp_service.data import SCENARIOS

    return [f"{name}-mnist" for name in SCENARIOS] + list(SCENARIOS)


def cmd_stream(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    scenario = load_scenario(args.scenario, dataset=args.dataset, tasks=args.tasks,
                             train_per_task=args.train_per_task, data_dir=args.data_dir, seed=args.seed)
    total = sum(len(t.train_y) for t in scenario.tasks)
    window: deque[tuple[int, int]] = deque()
    correct = seen = 0
    with _client(args, stream_id=args.stream_id) as client:
        client.wait_ready()
        batches = scenario_batches(scenario, args.batch_size, seed=args.seed, task_hints=not args.no_task_hints)
        with tqdm(total=total, unit="sample", desc=scenario.name, disable=args.quiet) as bar:
            for ack in client.train(batches, resume=args.stream_id is not None):
                n = ack.samples_applied + ack.held_out + ack.samples_skipped
                window.append((ack.correct, ack.samples_applied))
                correct, seen = correct + ack.correct, seen + ack.samples_applied
                while len(window) > 1 and sum(m for _, m in window) - window[0][1] >= args.window:
                    c, m = window.popleft()
                    correct, seen = correct - c, seen - m
                bar.update(n)
                bar.set_postfix(preq_acc=f"{correct / max(seen, 1):.3f}", version=ack.model_version,
                                drift="!" if ack.drift else "")
        status = client.status()
    print(f"streamed {total} samples of {scenario.name}; prequential accuracy (last {args.window}) "
          f"{correct / max(seen, 1):.3f}; model version {status.model_version}; anchors {status.anchors_taken}")
    return 0


def _load_image(path: str) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("L")
    if image.size != (28, 28):
        image = image.resize((28, 28), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _attention_paths(out: str, count: int) -> list[Path]:
    path = Path(out)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix or '.png'}") for i in range(count)]


def cmd_predict(args: argparse.Namespace) -> int:
    from PIL import Image

    x = np.stack([_load_image(p) for p in args.images])
    target = args.attention_target
    if target not in ("predicted", "runner-up"):
        target = [int(label) for label in target.split(",")]
    with _client(args) as client:
        reply = client.predict(x, top_k=args.top_k, attention=target if args.attention else None,
                               png=bool(args.attention))
    paths = _attention_paths(args.attention, len(x)) if args.attention else []
    for i, (image, prediction) in enumerate(zip(args.images, reply.predictions)):
        ranked = ", ".join(f"{label}: {p:.3f}" for label, p in
                           zip(prediction.top_labels, prediction.top_probabilities))
        line = f"{image}: {ranked}"
        if paths:
            picture = Image.open(io.BytesIO(prediction.attention.png))
            picture.resize((28 * args.scale, 28 * args.scale), Image.NEAREST).save(paths[i])
            line += f"  (attention for label {prediction.attention.label} -> {paths[i]})"
        print(line)
    print(f"model version {reply.model_version}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(MessageToDict(client.status(), preserving_proto_field_name=True), indent=2))
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.checkpoint()
    print(f"{reply.path} sha256={reply.sha256} version={reply.model_version} samples={reply.samples_seen}")
    return 0


def cmd_reanchor(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.reanchor()
    print(f"anchors taken {reply.anchors_taken}, model version {reply.model_version}")
    return 0


def _token(args: argparse.Namespace) -> str | None:
    """--token, else the first line of --token-file, else None (the client then reads $ASP_TOKEN)."""
    if args.token:
        return args.token
    if args.token_file:
        from asp_service.serving.auth import read_token_file

        tokens = read_token_file(args.token_file)
        return tokens[0] if tokens else None
    return None


def _client(args: argparse.Namespace, **extra) -> LearnerClient:
    """A client for the common options: target, application, token, TLS."""
    tls = {"tls": True, "root_certificates": Path(args.ca_cert).read_bytes()} if args.ca_cert else {"tls": args.tls}
    return LearnerClient(args.target, application=args.application, token=_token(args), **tls, **extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asp-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="127.0.0.1:9000", help="host:port of the gRPC proxy")
    parser.add_argument("--application", default="asp", help="Serve application name (gRPC metadata)")
    parser.add_argument("--token", default=None,
                        help="bearer token (default: $ASP_TOKEN); visible in ps, prefer --token-file or the env")
    parser.add_argument("--token-file", default=None, help="file whose first line is the bearer token")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS (to a proxy that terminates it, e.g. deploy/tls/nginx.conf)")
    parser.add_argument("--ca-cert", default=None, metavar="PEM",
                        help="verify the server against this CA certificate instead of the system's (implies --tls)")
    sub = parser.add_subparsers(dest="command", required=True)

    stream = sub.add_parser("stream", help="stream a continual-learning scenario into the service")
    stream.add_argument("--scenario", default="permuted-mnist", choices=scenario_names())
    stream.add_argument("--dataset", default="embedded", help="embedded (shipped), mnist or fashion")
    stream.add_argument("--data-dir", default=None, help="folder with MNIST/raw (for mnist, fashion)")
    stream.add_argument("--tasks", type=int, default=5)
    stream.add_argument("--train-per-task", type=int, default=None)
    stream.add_argument("--batch-size", type=int, default=500, help="samples per gRPC message")
    stream.add_argument("--window", type=int, default=1000, help="prequential accuracy window (samples)")
    stream.add_argument("--stream-id", default=None, help="reuse to resume a stream the service knows")
    stream.add_argument("--no-task-hints", action="store_true", help="task-free: do not send task hints")
    stream.add_argument("--seed", type=int, default=0)
    stream.add_argument("--quiet", action="store_true")
    stream.set_defaults(func=cmd_stream)

    predict = sub.add_parser("predict", help="classify images (any size; converted to 28x28 grayscale)")
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--attention", metavar="OUT.png", default=None,
                         help="write the c-EB attention map (OUT-i.png for several images)")
    predict.add_argument("--attention-target", default="predicted",
                         help="predicted, runner-up, or label(s) like 3 or 3,5")
    predict.add_argument("--scale", type=int, default=8, help="upscaling of the 28x28 map")
    predict.set_defaults(func=cmd_predict)

    sub.add_parser("status", help="print the learner's status as JSON").set_defaults(func=cmd_status)
    sub.add_parser("checkpoint", help="write a checkpoint now").set_defaults(func=cmd_checkpoint)
    sub.add_parser("reanchor", help="take an anchor now").set_defaults(func=cmd_reanchor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import grpc

    try:
        return args.func(args)
    except grpc.RpcError as error:
        print(f"asp-client: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
