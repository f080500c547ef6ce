"""Caffe-exact training: train-phase nets (graph.CaffeNet with data_shapes), Caffe's SGD solver
(sgd, learning_rate), snapshots in Caffe's formats (trainer, formats.solverstate), and the run
folder the `train` command writes (run)."""
