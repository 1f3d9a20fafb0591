"""plstream.stream."""
