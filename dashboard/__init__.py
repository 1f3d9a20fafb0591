"""plstream.dashboard."""
