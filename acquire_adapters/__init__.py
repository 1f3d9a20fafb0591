"""plstream.acquire_adapters."""
