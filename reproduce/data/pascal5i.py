"""PASCAL-5i's shape, shared by the converter (which records a model's fold) and the
evaluation (which splits the classes by fold): 20 classes in 4 folds of 5 test classes."""

N_CLASSES = 20
N_FOLDS = 4
FOLDS = tuple(range(N_FOLDS))
CLASSES_PER_FOLD = N_CLASSES // N_FOLDS
