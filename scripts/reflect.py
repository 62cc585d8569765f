#!/usr/bin/env python3
"""Talks to a postsub proxy through gRPC server reflection alone, with no .proto files.

    pip install grpcio grpcio-reflection protobuf
    python3 scripts/reflect.py list                          # services the server offers
    python3 scripts/reflect.py call postsub.v1.PostSubmission/Process '{"formId": "...", ...}'
    python3 scripts/reflect.py call postsub.v1.TaskAdmin/ListRuns @request.json
    echo '{}' | python3 scripts/reflect.py call postsub.v1.TaskAdmin/ListQueues -

`call` takes the request as protobuf JSON: the text itself, `@FILE` for a file, or `-` for
stdin. It prints the reply as JSON. Protobuf keeps every number of a `Struct` (answers,
outputs) as a double; whole numbers are printed as integers.

--server HOST:PORT (env POSTSUB_SERVER, default 127.0.0.1:50051); --token TOKEN (env
POSTSUB_TOKEN): reflection and every call need one unless the proxy runs without tokens.
"""
import argparse
import json
import os
import sys

try:
    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except ImportError as err:
    sys.exit(f"reflect.py: {err}; install its packages: pip install grpcio grpcio-reflection protobuf")

# Doubles above this are not all whole numbers an integer can hold exactly.
EXACT_INTEGERS = 2**53


class TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call, reflection's included."""

    def __init__(self, token):
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _with_token(self, details):
        metadata = tuple(details.metadata or ()) + self.metadata
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def read_request(argument):
    """The request text: itself, `@FILE`, or `-` for stdin."""
    if argument == "-":
        return sys.stdin.read()
    if argument.startswith("@"):
        with open(argument[1:], encoding="utf-8") as file:
            return file.read()
    return argument


def whole_numbers_as_integers(value):
    """JSON from protobuf, with the whole doubles of its Structs written as integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers_as_integers(item) for item in value]
    return value


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default=os.environ.get("POSTSUB_SERVER", "127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("POSTSUB_TOKEN"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the services the server offers")
    call = commands.add_parser("call", help="call one method")
    call.add_argument("method", help="SERVICE/METHOD, e.g. postsub.v1.TaskAdmin/ListRuns")
    call.add_argument("request", nargs="?", default="{}", help="JSON, @FILE or - (stdin)")
    return parser.parse_args()


def run(args):
    server = args.server.removeprefix("http://")
    channel = grpc.insecure_channel(server)
    if args.token:
        channel = grpc.intercept_channel(channel, TokenInterceptor(args.token))
    database = ProtoReflectionDescriptorDatabase(channel)
    if args.command == "list":
        for service in database.get_services():
            print(service)
        return 0
    if "/" not in args.method:
        raise SystemExit(f"error: {args.method!r} is not SERVICE/METHOD")
    service_name, method_name = args.method.rsplit("/", 1)
    pool = descriptor_pool.DescriptorPool(database)
    try:
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    except KeyError:
        raise SystemExit(f"error: the server offers no method {args.method}") from None
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    try:
        text = read_request(args.request)
    except OSError as err:
        raise SystemExit(f"error: cannot read the request: {err}") from None
    try:
        request = json_format.Parse(text, request_class())
    except json_format.ParseError as err:
        message = " ".join(str(err).split())
        raise SystemExit(f"error: the request is not {method.input_type.full_name} JSON: {message}") from None
    call = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    reply = call(request, timeout=10)
    print(json.dumps(whole_numbers_as_integers(json_format.MessageToDict(reply)), indent=2))
    return 0


def main():
    args = parse_args()
    try:
        return run(args)
    except grpc.RpcError as err:
        print(f"error: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
