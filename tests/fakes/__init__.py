"""Fake upstream servers that speak the providers' real wire formats over real sockets."""
