"""The golden checks against the real Caffe's outputs, and the self-check that runs them on a device."""
