"""Generated protobuf / gRPC code for trt_gateway.v1."""
