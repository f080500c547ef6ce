"""PASCAL-5i exactly as the original OSLSM code builds and scores it."""
