"""The jobs end to end, composed from the packages below: the four fold models' conversion,
both tables over all folds, one fold's training."""
