"""What re-training needs besides the Caffe trainer: the original's training episodes, the
authors' recipe (recipes/), and the demo's small start models and solver."""
