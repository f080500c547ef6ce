"""The run-time environment: devices, faithful numerics, the allocator, signals, progress."""
