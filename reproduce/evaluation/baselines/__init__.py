"""The paper's baselines (section 6) re-implemented from its description, on the base net's fc7:
1-NN and logistic regression over support patches, and fine-tuning fc6/fc7 with a new 2-way score
layer on the supports; each a method in methods.py, run over a fold's episodes by run.py."""
