"""plstream.analysis."""
