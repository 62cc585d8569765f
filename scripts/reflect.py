#!/usr/bin/env python3
"""Talks to a postsub proxy through gRPC server reflection alone, with no .proto files.

    pip install grpcio grpcio-reflection protobuf
    python3 scripts/reflect.py list                          # services the server offers
    python3 scripts/reflect.py call postsub.v1.PostSubmission/Process '{"formId": "...", ...}'

`call` takes the request as protobuf JSON and prints the reply as JSON.
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    server = "127.0.0.1:50051"
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--server":
        server, args = args[1], args[2:]
    if not args or args[0] not in ("list", "call"):
        print(__doc__, file=sys.stderr)
        return 2
    channel = grpc.insecure_channel(server)
    database = ProtoReflectionDescriptorDatabase(channel)
    if args[0] == "list":
        for service in database.get_services():
            print(service)
        return 0
    method_path, request_json = args[1], args[2] if len(args) > 2 else "{}"
    service_name, method_name = method_path.rsplit("/", 1)
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    request = json_format.Parse(request_json, request_class())
    try:
        reply = call(request, timeout=10)
    except grpc.RpcError as err:
        print(f"{err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(json.dumps(json_format.MessageToDict(reply), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
