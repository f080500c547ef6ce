"""FCN-32s (Long, Shelhamer and Darrell; github shelhamer/fcn.berkeleyvision.org voc-fcn32s): its
net spec and the surgery that makes its start model from VGG-16."""
