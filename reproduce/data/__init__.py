"""The data's way in: VOC and SBD folders, PASCAL-5i's folds and items, the original's episode
lists (with its references on the real VOC 2012), its exact pre-processing, synthetic sets."""
