"""Running and configuring the embedded Triton server."""
