"""Files: written whole or not at all, folder locks, which outputs are ours, digests, the source graph."""
